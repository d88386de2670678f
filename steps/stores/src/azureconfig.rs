//! The Azure Blob store's settings from the environment, under the names `object_store`'s
//! `MicrosoftAzureBuilder::from_env` reads (`AZURE_*`), plus `AZURE_PREFIX`.
//!
//! Credentials, in the order `object_store` tries them: an account key
//! (`AZURE_STORAGE_ACCOUNT_KEY`); workload identity (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and
//! `AZURE_FEDERATED_TOKEN_FILE`, which the AKS workload identity webhook sets in the pod); a
//! SAS token (`AZURE_STORAGE_SAS_KEY`); else the managed identity endpoint.

use serde::Deserialize;
use vault_backup_common::env::{self as cfg, ConfigError, Secret};

use crate::gcsconfig::key_prefix;

/// The Azure variables, exactly as documented, unparsed.
#[derive(Debug, Default, Clone, Deserialize)]
#[allow(missing_docs)]
pub struct AzureEnv {
    pub azure_container_name: Option<String>,
    pub azure_storage_account_name: Option<String>,
    pub azure_storage_account_key: Option<String>,
    pub azure_storage_sas_key: Option<String>,
    pub azure_storage_endpoint: Option<String>,
    pub azure_storage_use_emulator: Option<String>,
    pub azure_client_id: Option<String>,
    pub azure_tenant_id: Option<String>,
    pub azure_federated_token_file: Option<String>,
    pub azure_authority_host: Option<String>,
    pub azure_prefix: Option<String>,
}

/// Where and how to reach the Azure container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureConfig {
    /// The container.
    pub container: String,
    /// Key prefix without leading or trailing `/`; empty for the container's root.
    pub prefix: String,
    /// The storage account (required unless the emulator is used).
    pub account: Option<String>,
    /// The endpoint, for another than `https://<account>.blob.core.windows.net` (Azurite:
    /// `http://host:10000/<account>`).
    pub endpoint: Option<String>,
    /// Whether to use Azurite's well-known account, key and `AZURITE_BLOB_STORAGE_URL`.
    pub use_emulator: bool,
    /// The remaining settings, as `object_store` config keys (`azure_storage_account_key`,
    /// `azure_client_id`, ...), passed on unchanged: secrets among them stay redacted.
    pub options: Vec<(&'static str, Secret)>,
}

/// The Azure store's settings, or `None` if no container variable is set.
///
/// # Errors
/// A [`ConfigError`] naming the variable at fault.
pub fn azure_config(raw: &AzureEnv) -> Result<Option<AzureConfig>, ConfigError> {
    let trimmed = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let Some(container) = trimmed(&raw.azure_container_name) else {
        let stray = [
            ("AZURE_PREFIX", &raw.azure_prefix),
            ("AZURE_STORAGE_ENDPOINT", &raw.azure_storage_endpoint),
            (
                "AZURE_STORAGE_ACCOUNT_NAME",
                &raw.azure_storage_account_name,
            ),
        ];
        if let Some((var, _)) = stray.iter().find(|(_, v)| v.is_some()) {
            return Err(ConfigError::new(
                *var,
                "is set but no Azure container is: set AZURE_CONTAINER_NAME",
            ));
        }
        return Ok(None);
    };
    let use_emulator = cfg::parse_bool(
        "AZURE_STORAGE_USE_EMULATOR",
        raw.azure_storage_use_emulator.as_deref(),
        false,
    )?;
    let account = trimmed(&raw.azure_storage_account_name);
    if account.is_none() && !use_emulator {
        return Err(ConfigError::new(
            "AZURE_STORAGE_ACCOUNT_NAME",
            "is required for the Azure store but not set",
        ));
    }
    let endpoint = trimmed(&raw.azure_storage_endpoint)
        .map(|u| {
            let u = u.trim_end_matches('/').to_owned();
            let ok = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
            if ok {
                Ok(u)
            } else {
                Err(ConfigError::new(
                    "AZURE_STORAGE_ENDPOINT",
                    format!(
                        "expected a URL such as https://account.blob.core.windows.net, got {u:?}"
                    ),
                ))
            }
        })
        .transpose()?;
    if raw.azure_storage_account_key.is_some() && raw.azure_storage_sas_key.is_some() {
        return Err(ConfigError::new(
            "AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY",
            "both are set; give one credential (the account key would win silently)",
        ));
    }
    let options = [
        ("azure_storage_account_key", &raw.azure_storage_account_key),
        ("azure_storage_sas_key", &raw.azure_storage_sas_key),
        ("azure_client_id", &raw.azure_client_id),
        ("azure_tenant_id", &raw.azure_tenant_id),
        (
            "azure_federated_token_file",
            &raw.azure_federated_token_file,
        ),
        ("azure_authority_host", &raw.azure_authority_host),
    ]
    .into_iter()
    .filter_map(|(key, v)| trimmed(v).map(|v| (key, Secret::new(v))))
    .collect();
    Ok(Some(AzureConfig {
        container,
        prefix: key_prefix("AZURE_PREFIX", raw.azure_prefix.as_deref())?,
        account,
        endpoint,
        use_emulator,
        options,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> AzureEnv {
        cfg::from_iter(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .unwrap()
    }

    #[test]
    fn nothing_set_is_no_store_and_a_stray_variable_is_refused() {
        assert_eq!(azure_config(&env(&[])).unwrap(), None);
        let err = azure_config(&env(&[("AZURE_PREFIX", "a")])).unwrap_err();
        assert_eq!(err.variable, "AZURE_PREFIX");
    }

    #[test]
    fn container_account_key_and_prefix_are_read_and_the_key_is_redacted() {
        let c = azure_config(&env(&[
            ("AZURE_CONTAINER_NAME", "backups"),
            ("AZURE_STORAGE_ACCOUNT_NAME", "acct"),
            ("AZURE_STORAGE_ACCOUNT_KEY", "c2VjcmV0"),
            ("AZURE_PREFIX", "vault/"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.container, "backups");
        assert_eq!(c.account.as_deref(), Some("acct"));
        assert_eq!(c.prefix, "vault");
        assert_eq!(c.options.len(), 1);
        assert!(!format!("{c:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn missing_account_and_contradictions_name_their_variable() {
        let cases: [(&[(&str, &str)], &str); 3] = [
            (
                &[("AZURE_CONTAINER_NAME", "c")],
                "AZURE_STORAGE_ACCOUNT_NAME",
            ),
            (
                &[
                    ("AZURE_CONTAINER_NAME", "c"),
                    ("AZURE_STORAGE_ACCOUNT_NAME", "a"),
                    ("AZURE_STORAGE_ACCOUNT_KEY", "k"),
                    ("AZURE_STORAGE_SAS_KEY", "sv=x"),
                ],
                "AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY",
            ),
            (
                &[
                    ("AZURE_CONTAINER_NAME", "c"),
                    ("AZURE_STORAGE_USE_EMULATOR", "maybe"),
                ],
                "AZURE_STORAGE_USE_EMULATOR",
            ),
        ];
        for (pairs, var) in cases {
            assert_eq!(azure_config(&env(pairs)).unwrap_err().variable, var);
        }
        let emulator = azure_config(&env(&[
            ("AZURE_CONTAINER_NAME", "c"),
            ("AZURE_STORAGE_USE_EMULATOR", "true"),
        ]))
        .unwrap()
        .unwrap();
        assert!(emulator.use_emulator && emulator.account.is_none());
    }
}
