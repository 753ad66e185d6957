-- spooler schema, version 11: job metadata. A JSON object that travels with a job apart from its args
-- (`spooler_core::Meta`): the W3C `traceparent` of the span that enqueued it, which the run's
-- span continues. NULL when empty.

ALTER TABLE spooler_jobs ADD COLUMN meta TEXT;
