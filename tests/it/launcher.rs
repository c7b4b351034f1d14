//! The development EHR launcher, driven as an app would drive it: a raw HTTP
//! client that follows no redirect by itself, PKCE made here, and every
//! token checked by a real hfs started with the launcher's JWKS, issuer and
//! audience, so that the scopes are enforced by the FHIR server itself.
//!
//! Tests that need no FHIR server (discovery, client authentication, codes,
//! the proxy) run without one; the others each start their own hfs.

use crate::common;

use std::time::Duration;

use axum::Json;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::Jwk};
use passerelle::auth::keys::{SigningKey, jwks, random_token};
use passerelle_dev::hfs::Hfs;
use passerelle_dev::launcher::{
    ClientAuth, Launcher, LauncherConfig, RegisteredClient, Simulation,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use url::Url;

const PUBLIC: &str = "public-app";
const SECRET: &str = "secret-app";
const JWT: &str = "jwt-app";
const THE_SECRET: &str = "s3cret-for-launcher-tests";
const DOCTOR: &str = "pas-prac-moreau";

/// The app's addresses: nothing listens there, nothing needs to.
fn redirect_uri() -> Url {
    Url::parse("http://127.0.0.1:9/callback").unwrap()
}

fn app_launch_url() -> Url {
    Url::parse("http://127.0.0.1:9/launch").unwrap()
}

/// A launcher with a public, a `client_secret_basic` and a
/// `private_key_jwt` client, and (optionally) an hfs behind it.
struct Env {
    launcher: Launcher,
    hfs: Option<Hfs>,
    /// The `private_key_jwt` client's ES384 key, served at its JWKS URL.
    client_key: SigningKey,
    /// Follows no redirect.
    http: reqwest::Client,
}

/// Serve `body` as JSON at `/jwks` on a free port; returns its URL.
async fn serve_json(body: Value) -> Url {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/jwks", listener.local_addr().unwrap())).unwrap();
    let app = axum::Router::new().route("/jwks", get(move || async move { Json(body) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn env() -> Env {
    passerelle::telemetry::init("warn");
    let client_key = SigningKey::generate_es384("jwt-app-es384").unwrap();
    let jwks_url = serve_json(jwks(std::slice::from_ref(&client_key))).await;
    let clients = vec![
        RegisteredClient {
            client_id: PUBLIC.into(),
            redirect_uris: vec![redirect_uri()],
            auth: ClientAuth::Public,
        },
        RegisteredClient {
            client_id: SECRET.into(),
            redirect_uris: vec![redirect_uri()],
            auth: ClientAuth::SecretBasic(THE_SECRET.to_string().into()),
        },
        RegisteredClient {
            client_id: JWT.into(),
            redirect_uris: vec![redirect_uri()],
            auth: ClientAuth::PrivateKeyJwt { jwks_url },
        },
    ];
    let launcher = Launcher::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        LauncherConfig::new(app_launch_url(), clients),
    )
    .await
    .expect("the launcher starts");
    Env {
        launcher,
        hfs: None,
        client_key,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

/// [`env`] with an hfs that checks the launcher's tokens, seeded with the
/// fixtures through the launcher's proxy and a `system/*.cruds` token.
async fn env_with_hfs() -> Env {
    let mut env = env().await;
    let mut opts = common::hfs_options();
    opts.auth = Some(env.launcher.hfs_auth());
    opts.public_base = Some(env.launcher.fhir_base());
    let hfs = Hfs::start(&opts).await.expect("hfs with auth starts");
    env.launcher.set_upstream(hfs.base().clone());
    let token = env.launcher.system_token("system/*.cruds");
    let schema = common::schema();
    let shift = passerelle::seed::shift_for(time::OffsetDateTime::now_utc().date());
    for (file, bundle) in passerelle::seed::fixture_bundles(None).unwrap() {
        let bundle = passerelle::seed::prepare(&file, bundle, shift).unwrap();
        schema.validate_bundle(&bundle).unwrap();
        let r = env
            .http
            .post(env.launcher.fhir_base())
            .bearer_auth(&token)
            .header("content-type", "application/fhir+json")
            .json(&bundle)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "seeding {file}: {}", r.status());
    }
    env.hfs = Some(hfs);
    env
}

/// A PKCE verifier and its S256 challenge (RFC 7636 §4.1–4.2).
fn pkce() -> (String, String) {
    let verifier = random_token(32);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.to_string())
}

/// A JWT's claims, unverified.
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

impl Env {
    fn base(&self) -> String {
        self.launcher.base().to_string()
    }

    /// The EHR page, and the launch code in the URL it frames.
    async fn open_ehr(&self, patient: &str, encounter: Option<&str>) -> (String, String) {
        let r = self
            .http
            .get(self.launcher.ehr_url(patient, encounter, DOCTOR))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let html = unescape(&r.text().await.unwrap());
        let src = html
            .split("<iframe")
            .nth(1)
            .and_then(|s| s.split("src=\"").nth(1))
            .and_then(|s| s.split('"').next())
            .expect("the EHR page frames the app")
            .to_string();
        let src = Url::parse(&src).unwrap();
        assert!(src.as_str().starts_with(app_launch_url().as_str()), "{src}");
        assert_eq!(
            param(&src, "iss").as_deref(),
            Some(self.launcher.fhir_base().as_str())
        );
        (html, param(&src, "launch").expect("a launch code"))
    }

    /// The authorize URL an app builds.
    fn authorize_url(
        &self,
        client_id: &str,
        scope: &str,
        launch: Option<&str>,
        challenge: &str,
        extra: &[(&str, &str)],
    ) -> Url {
        let mut url = self.launcher.base().join("authorize").unwrap();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", client_id)
                .append_pair("redirect_uri", redirect_uri().as_str())
                .append_pair("scope", scope)
                .append_pair("state", "state-123")
                .append_pair(
                    "aud",
                    self.launcher.fhir_base().as_str().trim_end_matches('/'),
                )
                .append_pair("code_challenge", challenge)
                .append_pair("code_challenge_method", "S256");
            if let Some(l) = launch {
                q.append_pair("launch", l);
            }
            for (k, v) in extra {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// GET `url`, expecting a redirect; returns where to.
    async fn redirected(&self, url: Url) -> Url {
        let r = self.http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
        Url::parse(r.headers()["location"].to_str().unwrap()).unwrap()
    }

    /// An EHR launch up to the code: (code, verifier).
    async fn ehr_code(&self, client_id: &str, scope: &str, patient: &str) -> (String, String) {
        let (_, launch) = self.open_ehr(patient, Some(&encounter_of(patient))).await;
        let (verifier, challenge) = pkce();
        let back = self
            .redirected(self.authorize_url(client_id, scope, Some(&launch), &challenge, &[]))
            .await;
        assert!(back.as_str().starts_with(redirect_uri().as_str()), "{back}");
        assert_eq!(param(&back, "state").as_deref(), Some("state-123"));
        (
            param(&back, "code").unwrap_or_else(|| panic!("a code in {back}")),
            verifier,
        )
    }

    /// POST the token endpoint; (status, JSON).
    async fn token(&self, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.launcher.base().join("token").unwrap())
            .form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Exchange a code as the public client.
    async fn exchange(&self, code: &str, verifier: &str) -> (u16, Value) {
        self.token(
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri().as_str()),
                ("code_verifier", verifier),
                ("client_id", PUBLIC),
            ],
            None,
        )
        .await
    }

    /// A client assertion of the `private_key_jwt` client.
    fn assertion(&self, aud: &str, exp_in: i64, jti: &str) -> String {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        self.client_key
            .sign(&json!({
                "iss": JWT, "sub": JWT, "aud": aud, "jti": jti,
                "exp": now + exp_in, "iat": now,
            }))
            .unwrap()
    }

    fn token_endpoint(&self) -> String {
        self.launcher.base().join("token").unwrap().to_string()
    }

    /// GET a FHIR path through the launcher's proxy, with a bearer token.
    async fn fhir(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        // Appended, not joined: a path may look like an absolute URL.
        let mut req = self
            .http
            .get(format!("{}{path}", self.launcher.fhir_base()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn discovery(&self) -> (u16, Value) {
        let r = self
            .http
            .get(format!(
                "{}.well-known/smart-configuration",
                self.launcher.fhir_base()
            ))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Verify a JWT the launcher signed, against its JWKS.
    async fn verify(&self, jwt: &str, aud: &str) -> Value {
        let set: Value = self
            .http
            .get(self.launcher.jwks_url())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kid = jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
        let jwk = set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .expect("the token's kid is in the JWKS");
        let jwk: Jwk = serde_json::from_value(jwk.clone()).unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[aud]);
        v.set_issuer(&[self.launcher.issuer()]);
        jsonwebtoken::decode::<Value>(jwt, &DecodingKey::from_jwk(&jwk).unwrap(), &v)
            .expect("a valid token")
            .claims
    }
}

/// What a person reads: askama 0.16 also writes `&` as `&#38;`.
fn unescape(html: &str) -> String {
    common::unescape(&html.replace("&#38;", "&amp;"))
}

fn encounter_of(patient: &str) -> String {
    patient.replace("pas-p", "pas-enc-")
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn discovery_documents_announce_the_endpoints_and_the_switches_change_them() {
    let env = env().await;
    let base = env.base();
    let (status, doc) = env.discovery().await;
    assert_eq!(status, 200);
    assert_eq!(doc["issuer"], env.launcher.issuer());
    assert_eq!(doc["issuer"], base.trim_end_matches('/'));
    assert_eq!(doc["jwks_uri"], format!("{base}jwks"));
    assert_eq!(doc["authorization_endpoint"], format!("{base}authorize"));
    assert_eq!(doc["token_endpoint"], format!("{base}token"));
    assert_eq!(doc["revocation_endpoint"], format!("{base}revoke"));
    let list = |key: &str| -> Vec<String> {
        doc[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} is a list"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        list("token_endpoint_auth_methods_supported"),
        [
            "private_key_jwt",
            "client_secret_basic",
            "client_secret_post",
            "none"
        ]
    );
    assert_eq!(
        list("token_endpoint_auth_signing_alg_values_supported"),
        ["RS384", "ES384"]
    );
    assert_eq!(
        list("grant_types_supported"),
        ["authorization_code", "refresh_token", "client_credentials"]
    );
    assert_eq!(list("response_types_supported"), ["code"]);
    assert_eq!(list("code_challenge_methods_supported"), ["S256"]);
    assert!(list("scopes_supported").contains(&"launch/patient".to_string()));
    let caps = list("capabilities");
    for c in [
        "launch-ehr",
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
        "context-passthrough-banner",
        "context-passthrough-style",
        "context-ehr-patient",
        "context-ehr-encounter",
        "context-standalone-patient",
        "permission-offline",
        "permission-user",
        "permission-patient",
        "permission-v1",
        "permission-v2",
        "authorize-post",
        "sso-openid-connect",
    ] {
        assert!(caps.contains(&c.to_string()), "missing capability {c}");
    }

    // OpenID Connect discovery at the issuer, for the id token.
    let oidc: Value = env
        .http
        .get(format!("{base}.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(oidc["issuer"], env.launcher.issuer());
    assert_eq!(oidc["jwks_uri"], format!("{base}jwks"));
    assert_eq!(oidc["id_token_signing_alg_values_supported"][0], "RS256");

    // The JWKS holds the public RS256 key only.
    let set: Value = env
        .http
        .get(env.launcher.jwks_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &set["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["alg"].as_str()),
        (Some("RSA"), Some("RS256"))
    );
    assert!(key["kid"].as_str().unwrap().starts_with("launcher-rs256-1"));
    assert!(key.get("d").is_none(), "no private part");

    // V1Only: no permission-v2.
    env.launcher.simulate(Simulation::V1Only);
    let (_, doc) = env.discovery().await;
    let caps: Vec<&str> = doc["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(!caps.contains(&"permission-v2"));
    assert!(caps.contains(&"permission-v1"));

    // MissingWellKnown: 404, while OpenID discovery stays.
    env.launcher.simulate(Simulation::MissingWellKnown);
    assert_eq!(env.discovery().await.0, 404);
    let oidc = env
        .http
        .get(format!("{base}.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(oidc.status(), 200);

    // The home page's `sim` switches too, and refuses an unknown one.
    let home = env
        .http
        .get(format!("{base}?sim=none"))
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), 200);
    let html = unescape(&home.text().await.unwrap());
    assert!(html.contains("no FHIR server behind it"), "{html}");
    assert_eq!(env.discovery().await.0, 200);
    let bad = env
        .http
        .get(format!("{base}?sim=chaos"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(unescape(&bad.text().await.unwrap()).contains("\"chaos\" is not a simulation"));
}

#[tokio::test]
async fn ehr_launch_of_a_public_client_gives_context_and_tokens_that_hfs_enforces() {
    let env = env_with_hfs().await;
    // The EHR page: its own header, the patient's name from the FHIR
    // server, the app framed with iss and launch, framing allowed.
    let r = env
        .http
        .get(env.launcher.ehr_url("pas-p01", Some("pas-enc-01"), DOCTOR))
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("frame-src 'self' http://127.0.0.1:* https://127.0.0.1:*"),
        "{csp}"
    );
    let (html, launch) = env.open_ehr("pas-p01", Some("pas-enc-01")).await;
    for expected in [
        "Development EHR",
        "María José García",
        "Dr. Claire Moreau",
        "Office visit",
    ] {
        assert!(html.contains(expected), "missing {expected:?}");
    }

    // Discovery from the iss the app was given.
    let (_, doc) = env.discovery().await;
    let authorize = Url::parse(doc["authorization_endpoint"].as_str().unwrap()).unwrap();
    assert_eq!(authorize, env.launcher.base().join("authorize").unwrap());

    // Authorize (no page: an EHR launch is approved at once), then exchange.
    let (verifier, challenge) = pkce();
    let scope = "launch openid fhirUser offline_access user/Patient.rs patient/Encounter.rs";
    let back = env
        .redirected(env.authorize_url(
            PUBLIC,
            scope,
            Some(&launch),
            &challenge,
            &[("nonce", "n-1")],
        ))
        .await;
    assert_eq!(param(&back, "state").as_deref(), Some("state-123"));
    let code = param(&back, "code").unwrap();
    let (status, t) = env.exchange(&code, &verifier).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);
    assert_eq!(t["scope"], scope);
    assert_eq!(t["patient"], "pas-p01");
    assert_eq!(t["encounter"], "pas-enc-01");
    assert_eq!(
        t["need_patient_banner"], false,
        "the EHR page shows its own banner"
    );
    assert_eq!(
        t["fhirContext"],
        json!([{"reference": "Encounter/pas-enc-01"}])
    );
    assert_eq!(
        t["smart_style_url"],
        format!("{}smart-style.json", env.base())
    );
    assert_eq!(t["intent"], "passerelle-visit");
    assert_eq!(t["tenant"], "default");
    assert!(t["refresh_token"].as_str().unwrap().len() >= 40);

    // The access token: as hfs is told to expect it.
    let access = t["access_token"].as_str().unwrap();
    let c = env.verify(access, &env.launcher.audience()).await;
    assert_eq!(
        c["aud"],
        env.launcher.fhir_base().as_str().trim_end_matches('/')
    );
    assert_eq!(c["sub"], DOCTOR);
    assert_eq!(c["patient"], "pas-p01");
    assert_eq!(c["client_id"], PUBLIC);
    assert_eq!(c["scope"], scope);
    assert_eq!(
        c["fhirUser"],
        format!("{}Practitioner/{DOCTOR}", env.launcher.fhir_base())
    );
    // The id token: for the client, with the nonce.
    let id = env.verify(t["id_token"].as_str().unwrap(), PUBLIC).await;
    assert_eq!(id["sub"], DOCTOR);
    assert_eq!(id["nonce"], "n-1");
    assert_eq!(id["fhirUser"], c["fhirUser"]);

    // hfs accepts the token through the proxy, refuses no token (401)
    // and a resource type the grant does not cover (403).
    let (status, patient) = env.fhir("Patient/pas-p01", Some(access)).await;
    assert_eq!(status, 200);
    assert_eq!(patient["name"][0]["family"], "García");
    assert_eq!(env.fhir("Patient/pas-p01", None).await.0, 401);
    assert_eq!(env.fhir("Task?patient=pas-p01", Some(access)).await.0, 403);

    // The style the token response points to.
    let style: Value = env
        .http
        .get(t["smart_style_url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(style["color_highlight"], "#0b5cad");
}

#[tokio::test]
async fn private_key_jwt_assertions_are_verified_and_never_replayed() {
    let env = &env_with_hfs().await;
    let aud = env.token_endpoint();
    let (code, verifier) = env
        .ehr_code(JWT, "launch openid fhirUser user/Patient.rs", "pas-p02")
        .await;
    let exchange = |assertion: String| {
        let code = code.clone();
        let verifier = verifier.clone();
        async move {
            env.token(
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", redirect_uri().as_str()),
                    ("code_verifier", &verifier),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                ],
                None,
            )
            .await
        }
    };
    // Refused assertions leave the code unused (the client is checked first).
    let cases = [
        (
            env.assertion(&aud, 600, &random_token(8)),
            "more than five minutes away",
        ),
        (
            env.assertion(env.launcher.fhir_base().as_str(), 60, &random_token(8)),
            "aud must be the token endpoint",
        ),
        (env.assertion(&aud, -120, &random_token(8)), "expired"),
        (
            // The registered key's kid, signed by another key: the signature
            // of a second assertion put under the first one's header.
            {
                let good = env.assertion(&aud, 60, "x");
                let other = SigningKey::generate_es384("jwt-app-es384")
                    .unwrap()
                    .sign(&json!({"iss": JWT, "sub": JWT, "aud": aud, "jti": "x",
                        "exp": jsonwebtoken::get_current_timestamp() + 60}))
                    .unwrap();
                let (signed, _) = good.rsplit_once('.').unwrap();
                format!("{signed}.{}", other.rsplit_once('.').unwrap().1)
            },
            "signature is wrong",
        ),
    ];
    for (assertion, why) in cases {
        let (status, body) = exchange(assertion).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(body["error"], "invalid_client");
        assert!(
            body["error_description"].as_str().unwrap().contains(why),
            "{body}"
        );
    }
    let good = env.assertion(&aud, 60, "jti-1");
    let (status, t) = exchange(good.clone()).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["patient"], "pas-p02");
    assert_eq!(
        env.fhir("Patient/pas-p02", t["access_token"].as_str())
            .await
            .0,
        200
    );
    // The same assertion again: its jti was seen.
    let (status, body) = exchange(good).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("used before")
    );

    // Backend Services: system scopes, no refresh token, no patient.
    let backend = |scope: &'static str, assertion: String| async move {
        env.token(
            &[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
            ],
            None,
        )
        .await
    };
    let (status, t) = backend("system/Patient.rs", env.assertion(&aud, 60, "jti-2")).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["scope"], "system/Patient.rs");
    assert!(t.get("refresh_token").is_none());
    assert!(t.get("patient").is_none());
    let access = t["access_token"].as_str().unwrap();
    let c = env.verify(access, &env.launcher.audience()).await;
    assert_eq!(c["sub"], JWT);
    assert!(c.get("patient").is_none());
    assert_eq!(env.fhir("Patient?_count=2", Some(access)).await.0, 200);
    assert_eq!(env.fhir("Task?_count=2", Some(access)).await.0, 403);
    let (status, t) = backend("user/Patient.rs", env.assertion(&aud, 60, "jti-3")).await;
    assert_eq!((status, t["error"].as_str()), (400, Some("invalid_scope")));
    // A public client may not use client_credentials.
    let (status, t) = env
        .token(
            &[
                ("grant_type", "client_credentials"),
                ("scope", "system/Patient.rs"),
                ("client_id", PUBLIC),
            ],
            None,
        )
        .await;
    assert_eq!(
        (status, t["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
}

#[tokio::test]
async fn client_secret_basic_needs_the_right_secret() {
    let env = env().await;
    let (code, verifier) = env
        .ehr_code(SECRET, "launch user/Patient.rs", "pas-p03")
        .await;
    let redirect = redirect_uri();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, body) = env.token(&form, Some((SECRET, "wrong"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // A confidential client cannot pass as a public one.
    let mut public = form.to_vec();
    public.push(("client_id", SECRET));
    let (status, body) = env.token(&public, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, t) = env.token(&form, Some((SECRET, THE_SECRET))).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["scope"], "launch user/Patient.rs");
    assert!(t.get("refresh_token").is_none(), "no offline_access asked");
}

#[tokio::test]
async fn codes_are_single_use_bound_to_pkce_client_and_redirect_and_authorize_checks_its_input() {
    let env = &env().await;
    let scope = "launch user/Patient.rs";
    // A replayed code.
    let (code, verifier) = env.ehr_code(PUBLIC, scope, "pas-p01").await;
    assert_eq!(env.exchange(&code, &verifier).await.0, 200);
    let (status, body) = env.exchange(&code, &verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // A wrong verifier.
    let (code, _) = env.ehr_code(PUBLIC, scope, "pas-p01").await;
    let (status, body) = env.exchange(&code, &pkce().0).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("code_verifier")
    );
    // Another redirect URI, another client.
    let (code, verifier) = env.ehr_code(PUBLIC, scope, "pas-p01").await;
    let (status, body) = env
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:9/elsewhere"),
                ("code_verifier", &verifier),
                ("client_id", PUBLIC),
            ],
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (code, verifier) = env.ehr_code(PUBLIC, scope, "pas-p01").await;
    let (status, body) = env
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect_uri().as_str()),
                ("code_verifier", &verifier),
            ],
            Some((SECRET, THE_SECRET)),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        env.token(&[("grant_type", "password"), ("client_id", PUBLIC)], None)
            .await
            .1["error"],
        "unsupported_grant_type"
    );

    // Authorize: errors the client may hear go back to it, with its state.
    let (_, launch) = env.open_ehr("pas-p01", None).await;
    let (_, challenge) = pkce();
    let error_of = |url: Url| async move {
        let back = env.redirected(url).await;
        assert!(back.as_str().starts_with(redirect_uri().as_str()));
        (
            param(&back, "error").unwrap_or_default(),
            param(&back, "state"),
        )
    };
    let mut no_pkce = env.authorize_url(PUBLIC, scope, Some(&launch), &challenge, &[]);
    let kept: Vec<(String, String)> = no_pkce
        .query_pairs()
        .filter(|(k, _)| !k.starts_with("code_challenge"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    no_pkce.query_pairs_mut().clear().extend_pairs(kept);
    assert_eq!(
        error_of(no_pkce).await,
        ("invalid_request".to_string(), Some("state-123".to_string()))
    );
    let mut wrong_aud = env.authorize_url(PUBLIC, scope, Some(&launch), &challenge, &[]);
    let kept: Vec<(String, String)> = wrong_aud
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "aud" {
                "http://127.0.0.1:9/fhir".into()
            } else {
                v
            };
            (k.into_owned(), v.into_owned())
        })
        .collect();
    wrong_aud.query_pairs_mut().clear().extend_pairs(kept);
    assert_eq!(error_of(wrong_aud).await.0, "invalid_request");
    assert_eq!(
        error_of(env.authorize_url(PUBLIC, scope, Some("no-such-launch"), &challenge, &[]))
            .await
            .0,
        "invalid_request"
    );
    assert_eq!(
        error_of(env.authorize_url(PUBLIC, "user/Patient.rs", Some(&launch), &challenge, &[]))
            .await
            .0,
        "invalid_scope",
        "an EHR launch needs the launch scope"
    );
    // Errors about the client or its redirect URI are a page, never a redirect.
    for url in [
        env.authorize_url("nobody", scope, Some(&launch), &challenge, &[]),
        Url::parse(
            &env.authorize_url(PUBLIC, scope, Some(&launch), &challenge, &[])
                .as_str()
                .replace("%2Fcallback", "%2Fevil"),
        )
        .unwrap(),
    ] {
        let r = env.http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.headers().get("location").is_none());
        let html = unescape(&r.text().await.unwrap());
        assert!(
            html.contains("Unknown app") || html.contains("Redirect URI not registered"),
            "{html}"
        );
    }
    // The authorize request may also come as a form (authorize-post).
    let (_, launch) = env.open_ehr("pas-p01", None).await;
    let url = env.authorize_url(PUBLIC, scope, Some(&launch), &challenge, &[]);
    let r = env
        .http
        .post(env.launcher.base().join("authorize").unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(url.query().unwrap().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let back = Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(param(&back, "code").is_some());
}

#[tokio::test]
async fn refresh_tokens_rotate_keep_the_context_and_revocation_ends_them() {
    let env = &env_with_hfs().await;
    let (code, verifier) = env
        .ehr_code(
            PUBLIC,
            "launch offline_access user/Patient.rs user/Task.rs",
            "pas-p04",
        )
        .await;
    let (_, first) = env.exchange(&code, &verifier).await;
    let refresh = |token: String, scope: Option<&'static str>| async move {
        let mut form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", token),
            ("client_id", PUBLIC.to_string()),
        ];
        if let Some(s) = scope {
            form.push(("scope", s.to_string()));
        }
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.token(&form, None).await
    };
    let old = first["refresh_token"].as_str().unwrap().to_string();
    // Asking for more than granted is refused and spends nothing.
    let (status, body) = refresh(old.clone(), Some("user/Patient.cruds")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let (status, second) = refresh(old.clone(), None).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["patient"], "pas-p04");
    assert_eq!(second["encounter"], "pas-enc-04");
    let new = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(new, old, "rotated");
    assert_ne!(second["access_token"], first["access_token"]);
    let access = second["access_token"].as_str().unwrap();
    assert_eq!(env.fhir("Task?patient=pas-p04", Some(access)).await.0, 200);
    // The old one is spent.
    let (status, body) = refresh(old, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // A narrower refresh is allowed, and hfs sees the narrower grant.
    let (status, third) = refresh(new, Some("user/Patient.rs offline_access")).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["scope"], "user/Patient.rs offline_access");
    assert_eq!(
        env.fhir("Task?patient=pas-p04", third["access_token"].as_str())
            .await
            .0,
        403
    );

    // Revocation: 200 always; the revoked token is refused afterwards.
    let latest = third["refresh_token"].as_str().unwrap().to_string();
    let revoke = |form: Vec<(&'static str, String)>| async move {
        env.http
            .post(env.launcher.base().join("revoke").unwrap())
            .form(&form)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // Another client's attempt does nothing.
    assert_eq!(
        revoke(vec![
            ("token", latest.clone()),
            ("client_id", "nobody".into())
        ])
        .await,
        401
    );
    assert_eq!(
        revoke(vec![
            ("token", latest.clone()),
            ("token_type_hint", "refresh_token".into()),
            ("client_id", PUBLIC.into())
        ])
        .await,
        200
    );
    assert_eq!(
        revoke(vec![
            ("token", "never-issued".into()),
            ("client_id", PUBLIC.into())
        ])
        .await,
        200
    );
    let (status, body) = refresh(latest, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn standalone_picker_lists_the_servers_people_and_approving_yields_a_code() {
    let env = &env_with_hfs().await;
    // The home page lists the patients with a link to each one's EHR page.
    let home = unescape(
        &env.http
            .get(env.base())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(home.contains("Samuel Okafor"), "{home}");
    assert!(
        home.contains("/ehr?patient=pas-p01&encounter=pas-enc-01&practitioner=pas-prac-moreau"),
        "{home}"
    );

    let (verifier, challenge) = pkce();
    let scope = "launch/patient openid fhirUser patient/Patient.rs patient/Encounter.rs";
    let r = env
        .http
        .get(env.authorize_url(PUBLIC, scope, None, &challenge, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("form-action 'self' http://127.0.0.1:9"),
        "{csp}"
    );
    let html = unescape(&r.text().await.unwrap());
    for expected in [
        "Samuel Okafor",
        "María José García",
        "Dr. Claire Moreau",
        "Samuel Okafor: Office visit",
    ] {
        assert!(html.contains(expected), "missing {expected:?}");
    }
    assert!(
        html.contains("<label for=\"patient\">"),
        "labelled, keyboard-usable controls"
    );
    let request = html
        .split("name=\"request\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let approve = |fields: Vec<(&'static str, &'static str)>| {
        let request = request.clone();
        async move {
            let mut form = vec![("request", request.as_str())];
            form.extend(fields);
            env.http
                .post(env.launcher.base().join("authorize/approve").unwrap())
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    // An encounter of another patient is refused with a page.
    let r = approve(vec![
        ("practitioner", DOCTOR),
        ("patient", "pas-p10"),
        ("encounter", "pas-enc-01"),
        ("decision", "approve"),
    ])
    .await;
    assert_eq!(r.status(), 400);
    let r = approve(vec![
        ("practitioner", DOCTOR),
        ("patient", "pas-p10"),
        ("encounter", "pas-enc-10"),
        ("decision", "approve"),
    ])
    .await;
    assert_eq!(r.status(), 302);
    let back = Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(param(&back, "state").as_deref(), Some("state-123"));
    let (status, t) = env
        .exchange(&param(&back, "code").unwrap(), &verifier)
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["scope"], scope);
    assert_eq!(t["patient"], "pas-p10");
    assert_eq!(t["encounter"], "pas-enc-10");
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(env.fhir("Patient/pas-p10", Some(access)).await.0, 200);
    assert_ne!(
        env.fhir("Patient/pas-p01", Some(access)).await.0,
        200,
        "patient/ scopes stay in the patient's compartment"
    );
    // The request was used up; a second answer is a page.
    assert_eq!(
        approve(vec![("practitioner", DOCTOR), ("patient", "pas-p10")])
            .await
            .status(),
        400
    );

    // Deny sends access_denied back to the app.
    let (_, challenge) = pkce();
    let html = unescape(
        &env.http
            .get(env.authorize_url(PUBLIC, scope, None, &challenge, &[]))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let request = html
        .split("name=\"request\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    let r = env
        .http
        .post(env.launcher.base().join("authorize/approve").unwrap())
        .form(&[("request", request), ("decision", "deny")])
        .send()
        .await
        .unwrap();
    let back = Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));
}

#[tokio::test]
async fn each_simulation_breaks_the_launch_the_way_it_says() {
    let env = env_with_hfs().await;

    // Without simulation, v1 scopes are granted as asked and enforced as v2.
    let v1 = "launch patient/Patient.read patient/Observation.read";
    let (code, verifier) = env.ehr_code(PUBLIC, v1, "pas-p05").await;
    let (_, t) = env.exchange(&code, &verifier).await;
    assert_eq!(t["scope"], v1);
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(
        claims(access)["scope"],
        "launch patient/Patient.rs patient/Observation.rs"
    );
    assert_eq!(env.fhir("Patient/pas-p05", Some(access)).await.0, 200);

    env.launcher.simulate(Simulation::InvalidClient);
    let (code, verifier) = env
        .ehr_code(PUBLIC, "launch user/Patient.rs", "pas-p05")
        .await;
    let (status, body) = env.exchange(&code, &verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    env.launcher.simulate(Simulation::WrongRedirectUri);
    let (_, launch) = env.open_ehr("pas-p05", None).await;
    let r = env
        .http
        .get(env.authorize_url(
            PUBLIC,
            "launch user/Patient.rs",
            Some(&launch),
            &pkce().1,
            &[],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none(), "never a redirect");

    env.launcher.simulate(Simulation::ExpiredToken);
    let (code, verifier) = env
        .ehr_code(PUBLIC, "launch offline_access user/Patient.rs", "pas-p05")
        .await;
    let (status, t) = env.exchange(&code, &verifier).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["expires_in"], 0);
    assert!(t.get("refresh_token").is_none());
    let access = t["access_token"].as_str().unwrap();
    assert!(claims(access)["exp"].as_u64().unwrap() < jsonwebtoken::get_current_timestamp());
    assert_eq!(env.fhir("Patient/pas-p05", Some(access)).await.0, 401);

    env.launcher.simulate(Simulation::DowngradedScopes);
    let (code, verifier) = env
        .ehr_code(
            PUBLIC,
            "launch offline_access user/Patient.cruds user/Task.cu",
            "pas-p05",
        )
        .await;
    let (status, t) = env.exchange(&code, &verifier).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["scope"], "launch user/Patient.rs");
    assert!(t.get("refresh_token").is_none());
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(env.fhir("Patient/pas-p05", Some(access)).await.0, 200);
    let delete = env
        .http
        .delete(env.launcher.fhir_base().join("Patient/pas-p05").unwrap())
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 403, "no write granted");

    env.launcher.simulate(Simulation::V1Only);
    let (code, verifier) = env
        .ehr_code(PUBLIC, "launch user/Patient.read user/Task.rs", "pas-p05")
        .await;
    let (_, t) = env.exchange(&code, &verifier).await;
    assert_eq!(
        t["scope"], "launch user/Patient.read",
        "v2 scopes not granted"
    );
    assert_eq!(
        env.fhir("Patient/pas-p05", t["access_token"].as_str())
            .await
            .0,
        200
    );

    env.launcher.simulate(Simulation::MissingWellKnown);
    assert_eq!(env.discovery().await.0, 404);

    // The EHR page's `sim` sets the switch for people testing by hand, and
    // offers every simulation in its form.
    let url = format!("{}&sim=none", env.launcher.ehr_url("pas-p05", None, DOCTOR));
    let html = unescape(
        &env.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(env.discovery().await.0, 200);
    for sim in Simulation::ALL {
        assert!(
            html.contains(&format!("value=\"{}\"", sim.as_str())),
            "{sim}"
        );
    }
    let url = format!(
        "{}&sim=missing-well-known",
        env.launcher.ehr_url("pas-p05", None, DOCTOR)
    );
    assert_eq!(env.http.get(url).send().await.unwrap().status(), 200);
    assert_eq!(env.discovery().await.0, 404);
}

/// An upstream that answers with what it received.
async fn echo_server() -> Url {
    use axum::extract::Request;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let app = axum::Router::new().fallback(|req: Request| async move {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let header = |n: &str| {
            parts
                .headers
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
        };
        (
            [
                ("location", "http://elsewhere/fhir/Patient/1"),
                ("x-upstream", "yes"),
            ],
            Json(json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "authorization": header("authorization"),
                "host": header("host"),
                "x-private": header("x-private"),
                "body": String::from_utf8_lossy(&body),
            })),
        )
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn the_fhir_proxy_forwards_everything_and_answers_outcomes_when_the_server_is_away() {
    let env = env().await;
    // No upstream yet: 503 OperationOutcome.
    let (status, outcome) = env.fhir("Patient/1", None).await;
    assert_eq!(status, 503);
    assert_eq!(outcome["resourceType"], "OperationOutcome");

    let upstream = echo_server().await;
    env.launcher.set_upstream(upstream.clone());
    let r = env
        .http
        .put(format!(
            "{}Patient/pas-p01?_format=json&x=a%20b",
            env.launcher.fhir_base()
        ))
        .bearer_auth("token-as-sent")
        .header("connection", "x-private")
        .header("x-private", "hop")
        .body("{\"resourceType\":\"Patient\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-upstream"], "yes");
    assert_eq!(
        r.headers()["location"],
        "http://elsewhere/fhir/Patient/1",
        "headers come back unchanged"
    );
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["path"], "/Patient/pas-p01");
    assert_eq!(seen["query"], "_format=json&x=a%20b");
    assert_eq!(seen["authorization"], "Bearer token-as-sent");
    assert_eq!(
        seen["host"],
        upstream
            .host_str()
            .map(|h| format!("{h}:{}", upstream.port().unwrap()))
            .unwrap()
    );
    assert_eq!(
        seen["x-private"],
        Value::Null,
        "headers named by Connection are not forwarded"
    );
    assert_eq!(seen["body"], "{\"resourceType\":\"Patient\"}");
    // A path that looks like another server stays a path on the upstream.
    let (_, seen) = env.fhir("http://evil.example/x", None).await;
    assert_eq!(seen["path"], "/http://evil.example/x");

    // The upstream down: 502 OperationOutcome.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    env.launcher
        .set_upstream(Url::parse(&format!("http://127.0.0.1:{closed}/")).unwrap());
    let (status, outcome) = env.fhir("Patient/1", None).await;
    assert_eq!(status, 502);
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "transient");

    // Shutdown stops serving.
    let base = env.base();
    env.launcher.shutdown().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        reqwest::get(base).await.is_err(),
        "nothing listens after shutdown"
    );
}
