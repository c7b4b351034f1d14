//! Who is calling the token and revocation endpoints: client authentication
//! as each client is registered.
//!
//! * public: `client_id` in the form and nothing else (RFC 6749 §2.1; PKCE
//!   protects the code);
//! * `client_secret_basic`: HTTP Basic with the form-encoded id and secret
//!   (RFC 6749 §2.3.1), compared in constant time;
//! * `client_secret_post`: `client_id` and `client_secret` in the form
//!   (RFC 6749 §2.3.1), compared in constant time;
//! * `private_key_jwt`: a client assertion (RFC 7523, SMART App Launch 2.2.0
//!   §Asymmetric authentication): RS384 or ES384 with a `kid`, verified
//!   against the client's JWKS (fetched from its URL, cached, fetched again
//!   for an unknown `kid`); `iss` = `sub` = client id; `aud` = the token
//!   endpoint URL; `exp` in the future and at most five minutes away; a
//!   `jti` never seen before.
//!
//! A client registered for one method is refused with any other. Every
//! refusal is `invalid_client`, and its description says what was wrong
//! (this is a development tool), never echoing a secret.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde_json::Value;
use url::Url;

use super::{ClientAuth, RegisteredClient, Shared, unix_now};
use passerelle::auth::same_secret;

/// RFC 7523 §2.2.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// SMART: an assertion expires no more than five minutes after it is made.
const MAX_ASSERTION_LIFETIME: u64 = 300;
/// Clock skew allowed on the assertion's `exp`.
const LEEWAY: u64 = 10;
/// A client's JWKS must arrive within this time and size.
const JWKS_TIMEOUT: Duration = Duration::from_secs(10);
const JWKS_MAX_BYTES: usize = 256 * 1024;

/// Why a client was refused (the `error_description` of `invalid_client`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn refused(why: impl Into<String>) -> Refused {
    Refused(why.into())
}

/// What the form says about the client.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    pub client_id: Option<&'a str>,
    pub client_secret: Option<&'a str>,
    pub assertion_type: Option<&'a str>,
    pub assertion: Option<&'a str>,
}

/// The registered client behind a request, once it has proved who it is.
pub async fn authenticate<'s>(
    shared: &'s Shared,
    headers: &HeaderMap,
    form: Presented<'_>,
) -> Result<&'s RegisteredClient, Refused> {
    let basic = basic_credentials(headers)?;
    if let Some(secret) = form.client_secret {
        return secret_in_form(shared, basic.is_some(), form, secret);
    }
    match (basic, form.assertion_type, form.assertion) {
        (Some(_), _, Some(_)) | (Some(_), Some(_), None) => Err(refused(
            "use one client authentication method: HTTP Basic or a client assertion, not both",
        )),
        (Some((id, secret)), None, None) => {
            if form.client_id.is_some_and(|f| f != id) {
                return Err(refused(
                    "the client_id in the form differs from the one in HTTP Basic",
                ));
            }
            let client = registered(shared, &id)?;
            match &client.auth {
                ClientAuth::SecretBasic(expected) => {
                    if same_secret(expected.expose_secret(), &secret) {
                        Ok(client)
                    } else {
                        Err(refused("wrong client secret"))
                    }
                }
                other => Err(wrong_method(client, other)),
            }
        }
        (None, Some(kind), Some(assertion)) => {
            if kind != JWT_BEARER {
                return Err(refused(format!(
                    "client_assertion_type must be {JWT_BEARER}"
                )));
            }
            verify_assertion(shared, form.client_id, assertion).await
        }
        (None, Some(_), None) | (None, None, Some(_)) => Err(refused(
            "client_assertion and client_assertion_type must be sent together",
        )),
        (None, None, None) => {
            let id = form
                .client_id
                .ok_or_else(|| refused("no client authentication and no client_id"))?;
            let client = registered(shared, id)?;
            match &client.auth {
                ClientAuth::Public => Ok(client),
                other => Err(wrong_method(client, other)),
            }
        }
    }
}

/// `client_secret_post`: the secret in the form, and nothing else.
fn secret_in_form<'s>(
    shared: &'s Shared,
    with_basic: bool,
    form: Presented<'_>,
    secret: &str,
) -> Result<&'s RegisteredClient, Refused> {
    if with_basic || form.assertion_type.is_some() || form.assertion.is_some() {
        return Err(refused(
            "use one client authentication method: a client_secret in the form, HTTP Basic or a client assertion",
        ));
    }
    let id = form
        .client_id
        .ok_or_else(|| refused("client_secret_post needs client_id in the form"))?;
    let client = registered(shared, id)?;
    match &client.auth {
        ClientAuth::SecretPost(expected) if same_secret(expected.expose_secret(), secret) => {
            Ok(client)
        }
        ClientAuth::SecretPost(_) => Err(refused("wrong client secret")),
        other => Err(wrong_method(client, other)),
    }
}

fn registered<'s>(shared: &'s Shared, id: &str) -> Result<&'s RegisteredClient, Refused> {
    shared
        .client(id)
        .ok_or_else(|| refused(format!("client {id:?} is not registered")))
}

fn wrong_method(client: &RegisteredClient, registered: &ClientAuth) -> Refused {
    refused(format!(
        "client {:?} is registered to authenticate with {}",
        client.client_id,
        registered.method()
    ))
}

/// `Authorization: Basic base64(urlencoded id ":" urlencoded secret)`.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, Refused> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| refused("the Authorization header is not text"))?;
    let (scheme, encoded) = value
        .split_once(' ')
        .ok_or_else(|| refused("the Authorization header is not HTTP Basic"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(refused("clients authenticate here with HTTP Basic only"));
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| refused("the HTTP Basic credentials are not base64 text"))?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or_else(|| refused("the HTTP Basic credentials have no ':'"))?;
    Ok(Some((form_decode(id), form_decode(secret))))
}

/// `application/x-www-form-urlencoded` decoding of one component.
fn form_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Verify a `private_key_jwt` client assertion; returns its client.
async fn verify_assertion<'s>(
    shared: &'s Shared,
    form_client_id: Option<&str>,
    assertion: &str,
) -> Result<&'s RegisteredClient, Refused> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| refused("the client assertion is not a JWT"))?;
    if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
        return Err(refused(format!(
            "the client assertion is signed with {:?}; RS384 and ES384 are supported",
            header.alg
        )));
    }
    let kid = header
        .kid
        .ok_or_else(|| refused("the client assertion's header has no kid"))?;
    // The issuer names the client, whose keys then verify everything.
    let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
        .map_err(|_| refused("the client assertion's claims are not JSON"))?;
    let iss = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| refused("the client assertion has no iss"))?;
    if form_client_id.is_some_and(|f| f != iss) {
        return Err(refused("the client assertion's iss differs from client_id"));
    }
    let client = registered(shared, iss)?;
    let ClientAuth::PrivateKeyJwt { jwks_url } = &client.auth else {
        return Err(wrong_method(client, &client.auth));
    };
    let jwk = client_key(shared, &client.client_id, jwks_url, &kid).await?;
    let key = DecodingKey::from_jwk(&jwk)
        .map_err(|_| refused(format!("the client's key {kid:?} cannot verify signatures")))?;
    let token_endpoint = shared.endpoint("token");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[token_endpoint.as_str()]);
    validation.set_issuer(&[client.client_id.as_str()]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud", "jti"]);
    validation.leeway = LEEWAY;
    let claims = jsonwebtoken::decode::<Value>(assertion, &key, &validation)
        .map_err(|e| {
            refused(match e.kind() {
                ErrorKind::ExpiredSignature => "the client assertion has expired".to_string(),
                ErrorKind::InvalidAudience => {
                    format!(
                        "the client assertion's aud must be the token endpoint, {token_endpoint}"
                    )
                }
                ErrorKind::InvalidIssuer => {
                    "the client assertion's iss must be the client_id".into()
                }
                ErrorKind::InvalidSignature => "the client assertion's signature is wrong".into(),
                ErrorKind::MissingRequiredClaim(c) => {
                    format!("the client assertion has no {c}")
                }
                ErrorKind::InvalidAlgorithm => {
                    "the client assertion's alg does not fit the client's key".into()
                }
                _ => "the client assertion is not valid".into(),
            })
        })?
        .claims;
    if claims.get("sub").and_then(Value::as_str) != Some(client.client_id.as_str()) {
        return Err(refused("the client assertion's sub must be the client_id"));
    }
    let now = unix_now();
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or_else(|| refused("the client assertion's exp is not a number"))?;
    if exp > now + MAX_ASSERTION_LIFETIME + LEEWAY {
        return Err(refused(
            "the client assertion's exp is more than five minutes away",
        ));
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty())
        .ok_or_else(|| refused("the client assertion's jti is empty"))?;
    if !shared
        .store()
        .first_use_of_jti(&client.client_id, jti, exp + LEEWAY, now)
    {
        return Err(refused(
            "this client assertion was used before (its jti is not new)",
        ));
    }
    Ok(client)
}

/// The client's key `kid`, from the cache or a fresh fetch of its JWKS.
async fn client_key(
    shared: &Shared,
    client_id: &str,
    jwks_url: &Url,
    kid: &str,
) -> Result<Jwk, Refused> {
    let cached = shared.store().client_key(client_id, kid);
    if let Some(jwk) = cached {
        return Ok(jwk);
    }
    let keys = fetch_jwks(shared, jwks_url).await?;
    let found = keys.get(kid).cloned();
    shared.store().set_client_keys(client_id, keys);
    found.ok_or_else(|| refused(format!("the client's JWKS has no key with kid {kid:?}")))
}

/// The keys of a JWKS, by `kid`; keys without `kid` or of an unknown kind
/// are skipped.
async fn fetch_jwks(shared: &Shared, url: &Url) -> Result<HashMap<String, Jwk>, Refused> {
    let unreachable = || refused("the client's JWKS could not be fetched");
    let response = shared
        .http
        .get(url.clone())
        .header("accept", "application/json")
        .timeout(JWKS_TIMEOUT)
        .send()
        .await
        .map_err(|_| unreachable())?;
    if !response.status().is_success() {
        return Err(refused(format!(
            "the client's JWKS URL answered {}",
            response.status().as_u16()
        )));
    }
    let bytes = response.bytes().await.map_err(|_| unreachable())?;
    if bytes.len() > JWKS_MAX_BYTES {
        return Err(refused("the client's JWKS is too large"));
    }
    let set: Value =
        serde_json::from_slice(&bytes).map_err(|_| refused("the client's JWKS is not JSON"))?;
    let keys = set
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| refused("the client's JWKS has no keys"))?;
    Ok(keys
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter_map(|jwk| Some((jwk.common.key_id.clone()?, jwk)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        let raw = STANDARD.encode("my%20app:p%3Ass+word%");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {raw}")).unwrap(),
        );
        assert_eq!(
            basic_credentials(&h).unwrap(),
            Some(("my app".to_string(), "p:ss word%".to_string()))
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(basic_credentials(&h).is_err());
        assert_eq!(basic_credentials(&HeaderMap::new()).unwrap(), None);
    }
}
