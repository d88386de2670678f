//! A root token for a throw-away node, made from the source cluster's keys, and its end.
//!
//! The recovery of single secrets reads them from a snapshot restored into a scratch node that
//! nobody else can reach. No login of the source cluster is sure to read every path there, so
//! the step makes a root token with the keys it already holds for the unseal (or, for an
//! auto-unseal, the recovery keys): `sys/generate-root/attempt` (the server makes the one-time
//! pad), one `sys/generate-root/update` per key share with the attempt's nonce, and the
//! `encoded_token` decoded with the pad: base64 (raw, no padding), then XOR with the pad's
//! bytes (OpenBao `sdk/helper/roottoken`, `DecodeToken` with a non-zero OTP length). The token
//! is revoked with `auth/token/revoke-self` before the step ends.
//!
//! OpenBao 2.5.3 and later serve the unauthenticated `sys/generate-root/*` only on a listener
//! with `disable_unauthed_generate_root_endpoints = false` (CVE-2026-5807: anyone who reaches
//! the listener could cancel an attempt); elsewhere they answer 405. The recover Task's scratch
//! node listens on the pod's loopback only, where nobody else can, and sets it.

use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;
use url::Url;
use vault_backup_common::Secret;

use crate::client::{Vault, base, detail};
use crate::error::{Error, Result};

/// Why no root token came of the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootRefused {
    /// The node refused a key share (its words; never a key).
    Refused {
        /// E.g. `root generation aborted: ...`.
        detail: String,
    },
    /// Fewer keys than the threshold.
    Incomplete {
        /// Keys entered.
        progress: u64,
        /// Keys required.
        required: u64,
    },
}

/// The listener setting the hint of a 405 names.
pub const UNAUTHED_GENERATE_ROOT_HINT: &str = "the scratch node's listener must set disable_unauthed_generate_root_endpoints = false (OpenBao 2.5.3 and later disable sys/generate-root by default; harmless on a node that listens on the pod's loopback only, see tekton/recover-openbao.hcl)";

/// XORs `encoded` (base64, padded or not) with the one-time pad `otp`: the root token.
fn decode(encoded: &str, otp: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .ok()?;
    if bytes.len() != otp.len() {
        return None;
    }
    let token: Vec<u8> = bytes
        .iter()
        .zip(otp.as_bytes())
        .map(|(a, b)| a ^ b)
        .collect();
    String::from_utf8(token).ok()
}

impl Vault {
    /// Generates a root token on the node at `addr` from `keys` (its unseal keys, or the
    /// recovery keys of an auto-unseal), through the unauthenticated `sys/generate-root/*`.
    /// Whatever happens, an unfinished attempt is cancelled. For a throw-away node only.
    ///
    /// # Errors
    /// [`Error::Http`] for a node that does not serve the endpoints (405, with the listener
    /// setting to change) or another unexpected answer, or transport errors. Keys that do not
    /// make a token are `Ok(Err(RootRefused))`.
    pub async fn generate_root(
        &self,
        addr: &Url,
        keys: &[Secret],
    ) -> Result<std::result::Result<Secret, RootRefused>> {
        const ATTEMPT: &str = "sys/generate-root/attempt";
        let (status, text) = self
            .send_json(
                addr,
                reqwest::Method::PUT,
                ATTEMPT,
                None,
                &serde_json::json!({}),
            )
            .await?;
        if status == StatusCode::METHOD_NOT_ALLOWED || status == StatusCode::NOT_FOUND {
            return Err(Error::Http {
                addr: base(addr),
                what: "sys/generate-root/attempt",
                status: status.as_u16(),
                detail: format!("{}; {UNAUTHED_GENERATE_ROOT_HINT}", detail(&text)),
            });
        }
        if !status.is_success() {
            return Err(Error::Http {
                addr: base(addr),
                what: "sys/generate-root/attempt",
                status: status.as_u16(),
                detail: detail(&text),
            });
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // The pad the server made: it travels only over the node's own listener.
        let otp = Secret::new(v["otp"].as_str().unwrap_or_default());
        let nonce = v["nonce"].as_str().unwrap_or_default().to_owned();
        let mut outcome = Err(RootRefused::Incomplete {
            progress: 0,
            required: v["required"].as_u64().unwrap_or(0),
        });
        for key in keys {
            let body = serde_json::json!({ "key": key.expose(), "nonce": nonce });
            let (status, text) = self
                .send_json(
                    addr,
                    reqwest::Method::PUT,
                    "sys/generate-root/update",
                    None,
                    &body,
                )
                .await?;
            if !status.is_success() {
                outcome = Err(RootRefused::Refused {
                    detail: format!("{} {}", status.as_u16(), detail(&text)),
                });
                break;
            }
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if v["complete"].as_bool() == Some(true) {
                let encoded = v["encoded_token"]
                    .as_str()
                    .or_else(|| v["encoded_root_token"].as_str())
                    .unwrap_or_default();
                outcome = match decode(encoded, otp.expose()) {
                    Some(token) => Ok(Secret::new(token)),
                    None => Err(RootRefused::Refused {
                        detail:
                            "the encoded root token does not decode with the attempt's one-time pad"
                                .to_owned(),
                    }),
                };
                break;
            }
            outcome = Err(RootRefused::Incomplete {
                progress: v["progress"].as_u64().unwrap_or(0),
                required: v["required"].as_u64().unwrap_or(0),
            });
        }
        if outcome.is_err() {
            // Best effort: an aborted attempt may already be gone.
            let url = format!("{}/v1/{ATTEMPT}", base(addr));
            let _ = self
                .exchange(
                    addr,
                    self.http.delete(&url),
                    std::time::Duration::from_secs(30),
                )
                .await;
        }
        Ok(outcome)
    }

    /// The accessor of `token` (`auth/token/lookup-self`): safe to log, it names the token
    /// without being able to use it.
    ///
    /// # Errors
    /// [`Error::Http`] or transport errors.
    pub async fn token_accessor(&self, addr: &Url, token: &Secret) -> Result<String> {
        let url = format!("{}/v1/auth/token/lookup-self", base(addr));
        let request = self
            .http
            .get(&url)
            .headers(Self::token_header(addr, token)?);
        let (status, text) = self
            .exchange(addr, request, std::time::Duration::from_secs(30))
            .await?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match v["data"]["accessor"].as_str() {
            Some(a) if status.is_success() => Ok(a.to_owned()),
            _ => Err(Error::Http {
                addr: base(addr),
                what: "auth/token/lookup-self",
                status: status.as_u16(),
                detail: detail(&text),
            }),
        }
    }

    /// Revokes `token` (`auth/token/revoke-self`).
    ///
    /// # Errors
    /// [`Error::Http`] or transport errors.
    pub async fn revoke_self(&self, addr: &Url, token: &Secret) -> Result<()> {
        let (status, text) = self
            .send_json(
                addr,
                reqwest::Method::POST,
                "auth/token/revoke-self",
                Some(token),
                &serde_json::json!({}),
            )
            .await?;
        if status.is_success() {
            return Ok(());
        }
        Err(Error::Http {
            addr: base(addr),
            what: "auth/token/revoke-self",
            status: status.as_u16(),
            detail: detail(&text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoded_token_is_base64_xor_the_pad() {
        // OpenBao's EncodeToken: base64.RawStdEncoding(otp XOR token).
        let (token, otp) = ("s.abcdefghijklmnopqrstuvwx", "0123456789ABCDEFGHIJKLMNOP");
        let xored: Vec<u8> = token.bytes().zip(otp.bytes()).map(|(a, b)| a ^ b).collect();
        let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(xored);
        assert_eq!(decode(&encoded, otp).as_deref(), Some(token));
        assert_eq!(decode(&encoded, "short"), None);
    }
}
