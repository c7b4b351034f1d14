//! Signing keys and JWKS: Passerelle's own keys for `private_key_jwt`
//! (RS384 and ES384, SMART App Launch 2.2 §Asymmetric authentication) and the
//! development launcher's keys for access and id tokens (RS256).
//!
//! Keys are generated with the same `rsa` and `p384` crates that
//! jsonwebtoken's pure-Rust backend uses, and handed to it as PKCS#8 PEM.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("the private key is not a valid {0} PEM key: {1}")]
    Pem(&'static str, String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("{0:?} is not supported here (RS256, RS384 and ES384 are)")]
    Algorithm(Algorithm),
    #[error("the key file {0} cannot be read: {1}")]
    File(String, String),
}

/// A private signing key with its `kid` and public JWK.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    public_jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// A new 2048-bit RSA key for RS256 or RS384.
    pub fn generate_rsa(kid: &str, alg: Algorithm) -> Result<Self, KeyError> {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        if !matches!(alg, Algorithm::RS256 | Algorithm::RS384) {
            return Err(KeyError::Algorithm(alg));
        }
        let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        Self::from_pem(kid, alg, pem.as_bytes())
    }

    /// A new P-384 key for ES384.
    pub fn generate_es384(kid: &str) -> Result<Self, KeyError> {
        use p384::pkcs8::{EncodePrivateKey, LineEnding};
        let secret = p384::SecretKey::random(&mut rand::rngs::OsRng);
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        Self::from_pem(kid, Algorithm::ES384, pem.as_bytes())
    }

    /// A key from a setting that is either the PEM itself (it starts with
    /// `-----BEGIN`, RFC 7468 §2) or the path of a PEM file. A PEM put on
    /// one line with `\n` escapes, as some deployment tools write
    /// multi-line values, is accepted too.
    pub fn from_pem_or_path(kid: &str, alg: Algorithm, value: &str) -> Result<Self, KeyError> {
        let trimmed = value.trim_start();
        if trimmed.starts_with("-----BEGIN") {
            let pem = if !trimmed.contains('\n') && trimmed.contains("\\n") {
                std::borrow::Cow::Owned(trimmed.replace("\\n", "\n"))
            } else {
                std::borrow::Cow::Borrowed(trimmed)
            };
            return Self::from_pem(kid, alg, pem.as_bytes());
        }
        let pem =
            std::fs::read(value).map_err(|e| KeyError::File(value.to_string(), e.to_string()))?;
        Self::from_pem(kid, alg, &pem)
    }

    /// A key from a PKCS#8 (or, for RSA, PKCS#1) PEM private key.
    pub fn from_pem(kid: &str, alg: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let text = std::str::from_utf8(pem).map_err(|e| KeyError::Pem("UTF-8", e.to_string()))?;
        let (encoding, public_jwk) = match alg {
            Algorithm::RS256 | Algorithm::RS384 => {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                use rsa::pkcs8::DecodePrivateKey;
                use rsa::traits::PublicKeyParts;
                let private = rsa::RsaPrivateKey::from_pkcs8_pem(text)
                    .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(text))
                    .map_err(|e| KeyError::Pem("RSA", e.to_string()))?;
                let encoding = EncodingKey::from_rsa_pem(pem)
                    .map_err(|e| KeyError::Pem("RSA", e.to_string()))?;
                let jwk = json!({
                    "kty": "RSA", "use": "sig", "alg": format!("{alg:?}"), "kid": kid,
                    "n": b64(&private.n().to_bytes_be()), "e": b64(&private.e().to_bytes_be()),
                });
                (encoding, jwk)
            }
            Algorithm::ES384 => {
                use p384::elliptic_curve::sec1::ToEncodedPoint;
                use p384::pkcs8::DecodePrivateKey;
                let secret = p384::SecretKey::from_pkcs8_pem(text)
                    .map_err(|e| KeyError::Pem("P-384", e.to_string()))?;
                let encoding = EncodingKey::from_ec_pem(pem)
                    .map_err(|e| KeyError::Pem("P-384", e.to_string()))?;
                let point = secret.public_key().to_encoded_point(false);
                let jwk = json!({
                    "kty": "EC", "crv": "P-384", "use": "sig", "alg": "ES384", "kid": kid,
                    "x": b64(point.x().expect("uncompressed point")), "y": b64(point.y().expect("uncompressed point")),
                });
                (encoding, jwk)
            }
            other => return Err(KeyError::Algorithm(other)),
        };
        // The kid names the key material, not only its role: a key made
        // again at start-up gets a new kid, so a verifier that cached the old
        // JWKS fetches it again instead of trying the wrong key.
        let kid = format!("{kid}-{}", thumbprint(&public_jwk)?);
        let mut public_jwk = public_jwk;
        public_jwk["kid"] = json!(kid);
        Ok(SigningKey {
            kid,
            alg,
            encoding,
            public_jwk,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The public half, as a JWK.
    pub fn public_jwk(&self) -> &Value {
        &self.public_jwk
    }

    /// Sign `claims` as a compact JWT with this key's `kid` and `alg`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.encode(&header, claims)
    }

    /// Sign `claims` with this key's `alg` and no `kid` in the header, as
    /// issuers with one key may (OpenID Connect Core §10.1): the
    /// development launcher's kid-less `id_token`s, and tests.
    pub fn sign_without_kid<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        self.encode(&Header::new(self.alg), claims)
    }

    fn encode<T: Serialize>(&self, header: &Header, claims: &T) -> Result<String, KeyError> {
        jsonwebtoken::encode(header, claims, &self.encoding)
            .map_err(|e| KeyError::Sign(e.to_string()))
    }
}

/// The JWK thumbprint of a public key (RFC 7638, SHA-256), computed by
/// jsonwebtoken from the key's required members.
pub fn thumbprint(jwk: &Value) -> Result<String, KeyError> {
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone())
        .map_err(|e| KeyError::Generate(format!("the public JWK is not valid: {e}")))?;
    jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
        .map_err(|e| KeyError::Generate(e.to_string()))
}

/// `{"keys": [...]}` for a set of keys.
pub fn jwks(keys: &[SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk().clone()).collect::<Vec<_>>() })
}

/// A random URL-safe token of `bytes` random bytes (state, codes, ids).
pub fn random_token(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    b64(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, jwk::Jwk};

    fn roundtrip(key: &SigningKey) {
        let claims = json!({"sub": "x", "exp": 4_000_000_000u64});
        let token = key.sign(&claims).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        let jwk: Jwk = serde_json::from_value(key.public_jwk().clone()).unwrap();
        let decoding = DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = Validation::new(key.alg());
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims["sub"], "x");
    }

    #[test]
    fn generated_keys_sign_tokens_their_jwk_verifies() {
        roundtrip(&SigningKey::generate_rsa("r384", Algorithm::RS384).unwrap());
        roundtrip(&SigningKey::generate_es384("e384").unwrap());
        let set = jwks(&[SigningKey::generate_es384("a").unwrap()]);
        let kid = set["keys"][0]["kid"].as_str().unwrap();
        assert_eq!(
            kid,
            format!("a-{}", thumbprint(&set["keys"][0]).unwrap()),
            "the kid names the key material"
        );
        assert!(
            set["keys"][0].get("d").is_none(),
            "no private part in a JWKS"
        );
    }

    #[test]
    fn the_thumbprint_is_rfc_7638s_and_a_key_made_again_gets_a_new_kid() {
        // RFC 7638 §3.1, the example RSA key and its thumbprint.
        let jwk = json!({ "kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw" });
        assert_eq!(
            thumbprint(&jwk).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        let (a, b) = (
            SigningKey::generate_es384("passerelle-es384").unwrap(),
            SigningKey::generate_es384("passerelle-es384").unwrap(),
        );
        assert!(a.kid().starts_with("passerelle-es384-"));
        assert_ne!(a.kid(), b.kid(), "a new key, a new kid");
        assert_eq!(a.public_jwk()["kid"], a.kid());
    }

    #[test]
    fn random_tokens_are_long_and_distinct() {
        let a = random_token(16);
        assert_eq!(a.len(), 22, "128 bits");
        assert_ne!(a, random_token(16));
    }
}
