//! The DEK registry (client-side field encryption, Confluent's `/dek-registry/v1`): key
//! encryption keys (KEKs: a name for a key in a KMS, never the key) and the data encryption keys
//! (DEKs) wrapped by them, every version, soft-deleted ones too. Without them field-encrypted
//! data is unreadable after a restore. The archive holds what the registry serves of a DEK, its
//! `encryptedKeyMaterial` (wrapped by the KMS key); a `keyMaterial` member (the plain key, a
//! member of Confluent's DEK reply for a shared KEK) is never read, kept or logged.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::format::schema_registry::{Dek, Kek};
use serde_json::{Value, json};

use super::client::{RegistryClient, RegistryError, path_segment as enc};

/// Confluent's DEK algorithms: a subject's DEKs are listed per algorithm.
pub const ALGORITHMS: [&str; 3] = ["AES128_GCM", "AES256_GCM", "AES256_SIV"];
const BASE: &str = "/dek-registry/v1/keks";

/// `GET /dek-registry/v1/keks/{name}` as served (unknown members, `ts` among them, ignored).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KekReply {
    name: String,
    kms_type: String,
    kms_key_id: String,
    #[serde(default)]
    kms_props: Option<Value>,
    #[serde(default)]
    doc: Option<String>,
    #[serde(default)]
    shared: bool,
    #[serde(default)]
    deleted: bool,
}

/// A DEK as served; `keyMaterial` is deliberately not a member: serde skips it unread.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DekReply {
    subject: String,
    version: i32,
    algorithm: String,
    #[serde(default)]
    encrypted_key_material: Option<String>,
    #[serde(default)]
    deleted: bool,
}

/// Every KEK with its DEKs; `None` where the registry has no DEK registry (404).
pub async fn capture(
    client: &Arc<RegistryClient>,
    requests: &mut u64,
) -> Result<Option<Vec<Kek>>, RegistryError> {
    *requests += 1;
    let Some(names) = client
        .get_list_opt::<String>(&format!("{BASE}?deleted=true"))
        .await?
    else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for name in names {
        let k = enc(&name);
        *requests += 2;
        let r: KekReply = client.get(&format!("{BASE}/{k}?deleted=true")).await?;
        let subjects: Vec<String> = client
            .get_list(&format!("{BASE}/{k}/deks?deleted=true"))
            .await?;
        let mut deks = Vec::new();
        for s in &subjects {
            for alg in ALGORITHMS {
                let path = format!("{BASE}/{k}/deks/{}/versions", enc(s));
                *requests += 1;
                let versions: Vec<i32> = client
                    .get_list_opt(&format!("{path}?algorithm={alg}&deleted=true"))
                    .await?
                    .unwrap_or_default();
                for v in versions {
                    *requests += 1;
                    let d: DekReply = client
                        .get(&format!("{path}/{v}?algorithm={alg}&deleted=true"))
                        .await?;
                    deks.push(Dek {
                        subject: d.subject,
                        version: d.version,
                        algorithm: d.algorithm,
                        encrypted_key_material: d.encrypted_key_material,
                        deleted: d.deleted,
                    });
                }
            }
        }
        out.push(Kek {
            name: r.name,
            kms_type: r.kms_type,
            kms_key_id: r.kms_key_id,
            kms_props: r.kms_props,
            doc: r.doc,
            shared: r.shared,
            deleted: r.deleted,
            deks,
        });
    }
    Ok(Some(out))
}

/// What a restore will do with each KEK and DEK.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DekPlan {
    pub keks: Vec<KekAction>,
    pub deks: Vec<DekAction>,
}

/// What a restore does with one KEK or DEK version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAction {
    Create,
    /// The same is on the target already.
    Exists,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KekAction {
    pub name: String,
    pub action: KeyAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DekAction {
    pub kek: String,
    pub subject: String,
    pub version: i32,
    pub algorithm: String,
    pub action: KeyAction,
}

impl DekPlan {
    /// How many KEKs and DEK versions the restore creates.
    pub fn to_create(&self) -> (usize, usize) {
        let create = |a: &KeyAction| *a == KeyAction::Create;
        (
            self.keks.iter().filter(|k| create(&k.action)).count(),
            self.deks.iter().filter(|d| create(&d.action)).count(),
        )
    }
}

async fn target_kek(c: &RegistryClient, name: &str) -> Result<Option<KekReply>, RegistryError> {
    c.get_opt(&format!("{BASE}/{}?deleted=true", enc(name)))
        .await
}

async fn target_dek(
    c: &RegistryClient,
    kek: &str,
    d: &Dek,
) -> Result<Option<DekReply>, RegistryError> {
    c.get_opt(&format!(
        "{BASE}/{}/deks/{}/versions/{}?algorithm={}&deleted=true",
        enc(kek),
        enc(&d.subject),
        d.version,
        d.algorithm
    ))
    .await
}

/// Plans the restore of the KEKs and DEKs, reading the target only. A KEK of the same name that
/// names another KMS key, or a DEK of the same subject, version and algorithm that wraps other
/// key material, is a conflict, named: data encrypted with the archived key would not decrypt.
pub async fn plan(
    c: &RegistryClient,
    keks: &[Kek],
) -> Result<(DekPlan, Vec<String>), RegistryError> {
    let (mut plan, mut conflicts) = (DekPlan::default(), Vec::new());
    for k in keks {
        let action = match target_kek(c, &k.name).await? {
            None => KeyAction::Create,
            Some(t) if t.kms_type == k.kms_type && t.kms_key_id == k.kms_key_id => {
                KeyAction::Exists
            }
            Some(t) => {
                conflicts.push(format!(
                    "KEK {} exists on the target with KMS {} key {} (the archive's: {} key {})",
                    k.name, t.kms_type, t.kms_key_id, k.kms_type, k.kms_key_id
                ));
                continue;
            }
        };
        plan.keks.push(KekAction {
            name: k.name.clone(),
            action,
        });
        for d in &k.deks {
            let action = match target_dek(c, &k.name, d).await? {
                None => KeyAction::Create,
                Some(t) if t.encrypted_key_material == d.encrypted_key_material => {
                    KeyAction::Exists
                }
                Some(_) => {
                    conflicts.push(format!(
                        "DEK {} v{} ({}) of KEK {} exists on the target wrapping other key material",
                        d.subject, d.version, d.algorithm, k.name
                    ));
                    continue;
                }
            };
            plan.deks.push(DekAction {
                kek: k.name.clone(),
                subject: d.subject.clone(),
                version: d.version,
                algorithm: d.algorithm.clone(),
                action,
            });
        }
    }
    Ok((plan, conflicts))
}

/// Creates what the plan says (KEKs, then their DEKs with their versions and wrapped key
/// material), then soft-deletes what was soft-deleted at the source. Idempotent: a rerun finds
/// what it made and leaves it.
pub async fn restore(c: &RegistryClient, keks: &[Kek]) -> Result<u64, RegistryError> {
    let mut made = 0;
    for k in keks {
        if target_kek(c, &k.name).await?.is_none() {
            let mut body = json!({
                "name": k.name, "kmsType": k.kms_type, "kmsKeyId": k.kms_key_id, "shared": k.shared,
            });
            if let Some(p) = &k.kms_props {
                body["kmsProps"] = p.clone();
            }
            if let Some(d) = &k.doc {
                body["doc"] = json!(d);
            }
            c.request::<Value>(reqwest::Method::POST, BASE, Some(&body))
                .await?;
            made += 1;
        }
        let kp = format!("{BASE}/{}", enc(&k.name));
        for d in &k.deks {
            if target_dek(c, &k.name, d).await?.is_none() {
                let mut body =
                    json!({"subject": d.subject, "version": d.version, "algorithm": d.algorithm});
                if let Some(m) = &d.encrypted_key_material {
                    body["encryptedKeyMaterial"] = json!(m);
                }
                c.request::<Value>(reqwest::Method::POST, &format!("{kp}/deks"), Some(&body))
                    .await?;
                made += 1;
            }
        }
        for d in k.deks.iter().filter(|d| d.deleted) {
            let path = format!(
                "{kp}/deks/{}/versions/{}?algorithm={}",
                enc(&d.subject),
                d.version,
                d.algorithm
            );
            if target_dek(c, &k.name, d).await?.is_some_and(|t| !t.deleted) {
                c.request::<Value>(reqwest::Method::DELETE, &path, None)
                    .await?;
            }
        }
        if k.deleted && target_kek(c, &k.name).await?.is_some_and(|t| !t.deleted) {
            c.request::<Value>(reqwest::Method::DELETE, &kp, None)
                .await?;
        }
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DEK reply with its plain key (`keyMaterial`, Confluent's member): it is never kept.
    #[test]
    fn a_plain_key_served_is_not_kept() {
        let r: DekReply = serde_json::from_str(
            r#"{"kekName":"k","subject":"s","version":1,"algorithm":"AES256_GCM",
                "encryptedKeyMaterial":"d3JhcHBlZA==","keyMaterial":"UExBSU4tU0VDUkVU","ts":1}"#,
        )
        .unwrap();
        let kept = Dek {
            subject: r.subject,
            version: r.version,
            algorithm: r.algorithm,
            encrypted_key_material: r.encrypted_key_material,
            deleted: r.deleted,
        };
        let doc = serde_json::to_string(&kept).unwrap();
        assert!(
            !doc.contains("UExBSU4tU0VDUkVU") && !doc.contains("keyMaterial\""),
            "{doc}"
        );
        assert!(doc.contains("d3JhcHBlZA=="));
    }
}
