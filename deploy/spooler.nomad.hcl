# spooler on Nomad: one job server and a group of workers on one PostgreSQL database.
#
#   nomad job run deploy/spooler.nomad.hcl
#
# Nomad runs `spooler check` as the script check: exit 0 is passing, 1 warning (a backlog or an
# old job past the thresholds, or jobs waiting in a queue no live worker works), 2 critical (no
# answer within --timeout, or a store error): the convention Nomad and Consul read.

variable "token" {
  type        = string
  description = "the API and dashboard token; spooler serve refuses a non-loopback listener without one"
}

variable "store" {
  type        = string
  description = "postgres://user@host:5432/db?sslmode=verify-full&sslrootcert=/secrets/ca.pem"
}

job "spooler" {
  type = "service"

  group "server" {
    count = 1

    network {
      port "http" {
        to = 7700
      }
    }

    service {
      name     = "spooler"
      port     = "http"
      provider = "consul"

      check {
        name     = "spooler check"
        type     = "script"
        task     = "serve"
        command  = "/usr/local/bin/spooler"
        args     = ["check", "--url", "http://127.0.0.1:7700", "--timeout", "3s", "--max-age", "5m"]
        interval = "10s"
        timeout  = "5s"
      }
    }

    task "serve" {
      driver = "exec"

      config {
        command = "/usr/local/bin/spooler"
        args    = ["serve", "--listen", "0.0.0.0:7700", "--config", "local/spooler.toml"]
      }

      env {
        SPOOLER_STORE      = var.store
        SPOOLER_TOKEN      = var.token
        SPOOLER_LOG_FORMAT = "json"
      }

      template {
        destination = "local/spooler.toml"
        # A reload (SIGHUP) keeps running jobs going while queues, routes and schedules change.
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-EOT
          [queues.default]
          concurrency = 10
        EOT
      }

      # SIGTERM starts a graceful stop; running jobs get the grace period, then are released.
      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }

  group "workers" {
    count = 3

    network {
      port "probes" {
        to = 9700
      }
    }

    service {
      name     = "spooler-worker"
      port     = "probes"
      provider = "consul"

      check {
        name     = "healthz"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "3s"
      }
    }

    task "worker" {
      driver = "exec"

      config {
        command = "/usr/local/bin/spooler"
        args    = ["worker", "--listen", "0.0.0.0:9700"]
      }

      env {
        SPOOLER_STORE      = var.store
        SPOOLER_LOG_FORMAT = "json"
      }

      kill_signal  = "SIGTERM"
      kill_timeout = "45s"

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
