//! The Azure Blob store: the `object_store` client built from [`AzureConfig`].
//!
//! A snapshot goes up as `object_store`'s multipart upload, which on Azure is Put Block for
//! each part and one Put Block List at the end: uncommitted blocks are never visible as a
//! blob, so nothing appears under the name before the list commits it whole. An aborted upload
//! leaves its uncommitted blocks for Azure to discard (after a week); `object_store`'s abort
//! sends nothing.
//!
//! The copy is checked by reading it back ([`ServerChecksum::ReadBack`]): a blob committed from
//! a block list has no `Content-MD5` unless the client sets one (`x-ms-blob-content-md5`, which
//! Azure stores without checking it), which `object_store` does not, and Azure keeps no
//! whole-blob CRC64.

use std::sync::Arc;
use std::time::Duration;

use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use vault_backup_common::ConfigError;

use crate::azureconfig::AzureConfig;
use crate::object::{ObjectStoreBacked, ServerChecksum};
use crate::s3::request_timeout;
use crate::store::Store;

/// Builds the Azure Blob store.
///
/// # Errors
/// A [`ConfigError`] naming the variable if the client cannot be set up from the settings.
pub fn azure(cfg: &AzureConfig) -> Result<Box<dyn Store>, ConfigError> {
    let mut builder = MicrosoftAzureBuilder::new()
        .with_container_name(&cfg.container)
        .with_retry(retry())
        .with_client_options(client_options(cfg.endpoint.as_deref()));
    if let Some(account) = &cfg.account {
        builder = builder.with_account(account);
    }
    if let Some(endpoint) = &cfg.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    if cfg.use_emulator {
        builder = builder.with_use_emulator(true);
    }
    for (key, value) in &cfg.options {
        let parsed: AzureConfigKey = key.parse().map_err(|e| {
            ConfigError::new(key.to_ascii_uppercase(), format!("not understood: {e}"))
        })?;
        builder = builder.with_config(parsed, value.expose());
    }
    // Name the credential that was given: it is what a build error is most likely about.
    let variable = cfg
        .options
        .iter()
        .find(|(k, _)| matches!(*k, "azure_storage_account_key" | "azure_storage_sas_key"))
        .map_or("AZURE_STORAGE_ACCOUNT_NAME", |(k, _)| {
            if *k == "azure_storage_account_key" {
                "AZURE_STORAGE_ACCOUNT_KEY"
            } else {
                "AZURE_STORAGE_SAS_KEY"
            }
        });
    let store = builder.build().map_err(|e| {
        ConfigError::new(
            variable,
            format!("cannot set up the Azure Blob client: {e}"),
        )
    })?;
    let url = match (&cfg.endpoint, &cfg.account) {
        (Some(endpoint), _) => format!("{endpoint}/{}", cfg.container),
        (None, Some(account)) if !cfg.use_emulator => {
            format!("https://{account}.blob.core.windows.net/{}", cfg.container)
        }
        _ => format!("azurite://{}", cfg.container),
    };
    Ok(Box::new(ObjectStoreBacked {
        name: "azure",
        url,
        prefix: prefix("AZURE_PREFIX", &cfg.prefix)?,
        inner: Arc::new(store) as Arc<dyn ObjectStore>,
        checksum: ServerChecksum::ReadBack,
    }))
}

/// The client's timeouts, as for S3: one 8 MiB part must fit in one request's limit.
pub(crate) fn client_options(endpoint: Option<&str>) -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(request_timeout())
        .with_allow_http(endpoint.is_some_and(|e| e.starts_with("http://")))
}

/// Retries as for S3: a few, backing off, within one and a half request limits.
pub(crate) fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
        max_retries: 5,
        retry_timeout: request_timeout() * 3 / 2,
    }
}

/// The key prefix as an `object_store` path, `None` for the root.
pub(crate) fn prefix(variable: &str, prefix: &str) -> Result<Option<ObjectPath>, ConfigError> {
    if prefix.is_empty() {
        return Ok(None);
    }
    ObjectPath::parse(prefix)
        .map(Some)
        .map_err(|e| ConfigError::new(variable, format!("not a usable key prefix: {e}")))
}

#[cfg(test)]
mod tests {
    use vault_backup_common::env::Secret;

    use super::*;

    #[test]
    fn an_account_key_that_is_not_base64_is_a_configuration_error_naming_it() {
        let err = azure(&AzureConfig {
            container: "c".into(),
            prefix: String::new(),
            account: Some("acct".into()),
            endpoint: None,
            use_emulator: false,
            options: vec![("azure_storage_account_key", Secret::new("not base64!"))],
        })
        .unwrap_err();
        assert_eq!(err.variable, "AZURE_STORAGE_ACCOUNT_KEY");
        assert!(!err.to_string().contains("not base64!"), "{err}");
    }
}
