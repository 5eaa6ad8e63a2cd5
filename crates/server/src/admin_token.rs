//! The admin token: given in the config, or kept in `<data>/admin-token`
//! (mode 0600), generated on first start. Its value is never logged.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::auth::generate_admin_token;
use crate::error::{Error, Result};

pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The configured token, else the stored one, else a new one (stored).
pub fn load_or_create(data_dir: &Path, configured: Option<&str>) -> Result<String> {
    if let Some(token) = configured {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::InvalidRequest(
                "the configured admin token is empty".to_owned(),
            ));
        }
        tracing::info!("using the configured admin token");
        return Ok(token.to_owned());
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim();
            if token.is_empty() {
                return Err(Error::InvalidRequest(format!(
                    "{} is empty: delete it to generate a new admin token",
                    path.display()
                )));
            }
            tracing::info!(path = %path.display(), "using the stored admin token");
            Ok(token.to_owned())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let token = generate_admin_token();
            let context = format!("writing the admin token to {}", path.display());
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(Error::io(context.clone()))?;
            file.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(Error::io(context))?;
            tracing::info!(path = %path.display(), "generated an admin token");
            Ok(token)
        }
        Err(err) => Err(Error::io(format!("reading {}", path.display()))(err)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_generated_token_is_private_and_reused() {
        let data = tempfile::tempdir().expect("temp dir");
        let first = load_or_create(data.path(), None).expect("generate");
        let mode = std::fs::metadata(data.path().join(ADMIN_TOKEN_FILE))
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(data.path(), None).expect("reuse"), first);
        assert_eq!(
            load_or_create(data.path(), Some("given")).expect("configured"),
            "given"
        );
    }
}
