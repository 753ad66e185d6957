//! Connect-time helpers: the `?schema=` URL parameter, the check of a schema name, and the message
//! of a failed connect.

use spooler_core::{StoreError, StoreResult};

/// Splits `?schema=NAME` off a URL: returns the URL without it and the schema, if given.
pub(crate) fn take_schema_param(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("schema=") {
            Some(value) => {
                schema = Some(value.to_string());
                false
            }
            None => !pair.is_empty(),
        })
        .collect();
    if rest.is_empty() {
        (base.to_string(), schema)
    } else {
        (format!("{base}?{}", rest.join("&")), schema)
    }
}

/// Fails unless `schema` is a name [`PgOptions::schema`](crate::PgOptions::schema) allows.
pub(crate) fn validate_schema(schema: &str) -> StoreResult<()> {
    let mut chars = schema.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && schema.len() <= 50;
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidInput {
            field: "schema",
            message: format!(
                "\"{schema}\" is not a valid schema name (use letters, digits and _, at most 50 bytes, not starting with a digit)"
            ),
        })
    }
}

/// The cause of a failed connect and, when known, the fix.
pub(crate) fn connect_message(
    err: &sqlx::Error,
    endpoint: &str,
    user: &str,
    database: &str,
) -> String {
    if let sqlx::Error::Database(db) = err {
        let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
        let fix = match code.as_str() {
            "28P01" | "28000" => {
                format!(" (check the user \"{user}\" and its password in the URL)")
            }
            "3D000" => format!(" (create it: createdb -h HOST -p PORT {database})"),
            "53300" => {
                " (too many connections: lower max_connections or raise the server's)".into()
            }
            _ => String::new(),
        };
        return format!("PostgreSQL at {endpoint} refused: {}{fix}", db.message());
    }
    format!(
        "cannot reach PostgreSQL at {endpoint}: {err} (is the server running and accepting TCP connections on {endpoint}? check the host and port in the URL)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_param_is_split_off() {
        assert_eq!(
            take_schema_param("postgres://u@h:5432/db?schema=t1"),
            ("postgres://u@h:5432/db".to_string(), Some("t1".to_string()))
        );
        assert_eq!(
            take_schema_param("postgres://u@h/db?sslmode=disable&schema=t1&application_name=x"),
            (
                "postgres://u@h/db?sslmode=disable&application_name=x".to_string(),
                Some("t1".to_string())
            )
        );
        assert_eq!(
            take_schema_param("postgres://u@h/db"),
            ("postgres://u@h/db".to_string(), None)
        );
    }

    #[test]
    fn schema_names_are_identifiers() {
        assert!(validate_schema("spooler").is_ok());
        assert!(validate_schema("t_1").is_ok());
        for bad in ["", "1a", "a-b", "a\"b", "a;drop", &"x".repeat(51)] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }
}
