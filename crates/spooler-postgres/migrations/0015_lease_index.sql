-- spooler schema, version 15: the index of leases serves only the statements that ask for leases.
--
-- Its condition was `state = 'running'` alone, so any statement that finds running jobs by id
-- (the write of outcomes, the facts read before it, lease extension) could also walk it. The
-- write of outcomes keeps one plan per connection (version 14): made while the statistics showed
-- few running jobs, that plan walked every running job for each job it wrote, and a finish of 100
-- jobs with 400 running took 40 ms instead of 2. Now the index also requires a lease, which those
-- statements do not name: they find each job by its key, whatever the statistics say. The rescue
-- (`lease_expires_at < $1`) and the count of a queue's running jobs name it.

DROP INDEX {schema}.jobs_running_lease;
CREATE INDEX jobs_running_lease ON {schema}.jobs_active (lease_expires_at)
    WHERE state = 'running' AND lease_expires_at IS NOT NULL;
