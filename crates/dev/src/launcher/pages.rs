//! The launcher's pages: the home page listing the FHIR server's patients,
//! the "Development EHR" page that frames the app (EHR launch), the
//! standalone picker, the error page, and the style the app is given.
//!
//! They read the FHIR server as the EHR would ([`super::upstream`]) and show
//! names, so a person testing by hand knows whom they launched. Both pages
//! that carry a `sim` parameter set the simulation switch, so a person can
//! try each failure without writing code.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::store::{LaunchContext, Pending};
use super::upstream::{self, Person, UpstreamError};
use super::{ClientAuth, Shared, Simulation, State as AppState};
use passerelle::fhir::client::is_valid_id;

/// The CSP of every answer that sets none of its own.
pub const DEFAULT_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'self'";

/// Where apps may be framed from the EHR page: any loopback origin (apps
/// under development), besides the configured app's own origin.
const LOOPBACK_FRAMES: &str =
    "http://127.0.0.1:* https://127.0.0.1:* http://localhost:* https://localhost:*";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/ehr", get(ehr))
        .route("/smart-style.json", get(smart_style))
        .route("/static/passerelle.css", get(stylesheet))
}

// ---------------------------------------------------------------- errors

/// A page that says what went wrong, with its status code.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    title: &'static str,
    message: String,
    hint: &'static str,
}

#[derive(Template)]
#[template(path = "launcher_error.html")]
struct ErrorTemplate<'a> {
    title: &'a str,
    message: &'a str,
    hint: &'a str,
}

impl PageError {
    pub fn bad_request(title: &'static str, message: String) -> Self {
        PageError {
            status: StatusCode::BAD_REQUEST,
            title,
            message,
            hint: "Check the address, or start again from the launcher's home page or the app.",
        }
    }

    fn upstream(e: UpstreamError) -> Self {
        let (status, hint) = match &e {
            UpstreamError::NotFound(_) => (
                StatusCode::NOT_FOUND,
                "Pick a patient from the launcher's home page.",
            ),
            UpstreamError::NotConfigured => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Start the launcher with a FHIR server behind it (--fhir-upstream).",
            ),
            _ => (
                StatusCode::BAD_GATEWAY,
                "Check that the FHIR server runs and accepts the launcher's tokens.",
            ),
        };
        PageError {
            status,
            title: "FHIR server problem",
            message: e.to_string(),
            hint,
        }
    }
}

impl From<UpstreamError> for PageError {
    fn from(e: UpstreamError) -> Self {
        PageError::upstream(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        tracing::info!(
            status = self.status.as_u16(),
            title = self.title,
            "launcher page refused"
        );
        let page = ErrorTemplate {
            title: self.title,
            message: &self.message,
            hint: self.hint,
        };
        match page.render() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(_) => (self.status, self.message).into_response(),
        }
    }
}

fn render(t: impl Template) -> Result<Response, PageError> {
    t.render()
        .map(|html| Html(html).into_response())
        .map_err(|e| {
            tracing::error!(cause = %e, "a launcher page did not render");
            PageError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                title: "Launcher failed",
                message: "The page could not be made; the details are in the log.".into(),
                hint: "Try again.",
            }
        })
}

fn with_csp(mut response: Response, csp: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(csp) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    response
}

/// `scheme://host:port` of a URL, for a CSP source.
fn origin(url: &Url) -> Option<String> {
    let o = url.origin();
    o.is_tuple().then(|| o.ascii_serialization())
}

// ---------------------------------------------------------------- simulation

/// An option of the simulation menus.
struct SimOption {
    value: &'static str,
    label: String,
    selected: bool,
}

fn sim_options(current: Simulation) -> Vec<SimOption> {
    Simulation::ALL
        .iter()
        .map(|s| SimOption {
            value: s.as_str(),
            label: format!("{}: {}", s.as_str(), s.describe()),
            selected: *s == current,
        })
        .collect()
}

/// Apply `?sim=` if there is one.
fn apply_sim(shared: &Shared, sim: Option<&str>) -> Result<Simulation, PageError> {
    if let Some(s) = sim.map(str::trim).filter(|s| !s.is_empty()) {
        let sim = s
            .parse::<Simulation>()
            .map_err(|e| PageError::bad_request("Unknown simulation", e.to_string()))?;
        shared.set_simulation(sim);
    }
    Ok(shared.simulation())
}

// ---------------------------------------------------------------- home

struct HomeRow {
    name: String,
    birth_date: String,
    href: String,
}

struct ClientRow {
    id: String,
    method: &'static str,
    redirect_uris: String,
}

#[derive(Template)]
#[template(path = "launcher_home.html")]
struct HomePage {
    patients: Vec<HomeRow>,
    notice: Option<String>,
    practitioner: String,
    sims: Vec<SimOption>,
    fhir_base: String,
    discovery: String,
    jwks: String,
    app_launch_url: String,
    clients: Vec<ClientRow>,
}

#[derive(Debug, Deserialize)]
struct HomeQuery {
    sim: Option<String>,
    /// The practitioner signed in at the EHR (`?as=<id>`); a physician
    /// (a name with a "Dr" prefix) by default.
    r#as: Option<String>,
}

async fn home(
    State(shared): State<AppState>,
    Query(q): Query<HomeQuery>,
) -> Result<Response, PageError> {
    let sim = apply_sim(&shared, q.sim.as_deref())?;
    let (patients, encounters, practitioners) = futures::join!(
        upstream::people(&shared, "Patient"),
        upstream::encounters(&shared),
        upstream::people(&shared, "Practitioner"),
    );
    let practitioners = practitioners.unwrap_or_default();
    let practitioner = practitioners
        .iter()
        .find(|p| q.r#as.as_deref() == Some(p.id.as_str()))
        .or_else(|| practitioners.iter().find(|p| p.name.starts_with("Dr")))
        .or(practitioners.first())
        .map(|p| (p.id.clone(), p.name.clone()));
    let latest: HashMap<String, String> = encounters
        .unwrap_or_default()
        .into_iter()
        .rev() // oldest first: each patient's latest is inserted last and kept
        .filter_map(|e| Some((e.patient?, e.id)))
        .collect();
    let (patients, notice) = match patients {
        Ok(list) => (list, None),
        Err(e) => (vec![], Some(e.to_string())),
    };
    let rows = patients
        .into_iter()
        .map(|p| {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("patient", &p.id);
            if let Some(e) = latest.get(&p.id) {
                q.append_pair("encounter", e);
            }
            if let Some((id, _)) = &practitioner {
                q.append_pair("practitioner", id);
            }
            HomeRow {
                href: format!("/ehr?{}", q.finish()),
                name: p.name,
                birth_date: p.birth_date,
            }
        })
        .collect();
    let page = HomePage {
        patients: rows,
        notice,
        practitioner: practitioner.map(|(_, name)| name).unwrap_or_default(),
        sims: sim_options(sim),
        fhir_base: shared.fhir_base().to_string(),
        discovery: shared
            .fhir_base()
            .join(".well-known/smart-configuration")
            .expect("valid URL")
            .to_string(),
        jwks: shared.endpoint("jwks").to_string(),
        app_launch_url: shared.app_launch_url.to_string(),
        clients: shared
            .clients
            .iter()
            .map(|c| ClientRow {
                id: c.client_id.clone(),
                method: match c.auth {
                    ClientAuth::Public => "public",
                    ClientAuth::SecretBasic(_) => "client_secret_basic",
                    ClientAuth::SecretPost(_) => "client_secret_post",
                    ClientAuth::PrivateKeyJwt { .. } => "private_key_jwt",
                },
                redirect_uris: c
                    .redirect_uris
                    .iter()
                    .map(Url::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
            .collect(),
    };
    render(page)
}

// ---------------------------------------------------------------- EHR page

#[derive(Template)]
#[template(path = "launcher_ehr.html")]
struct EhrPage {
    patient_name: String,
    birth_date: String,
    encounter_label: String,
    practitioner_name: String,
    patient: String,
    encounter: String,
    practitioner: String,
    frame_src: String,
    sims: Vec<SimOption>,
    notice: Option<String>,
}

#[derive(Debug, Deserialize)]
struct EhrQuery {
    patient: Option<String>,
    encounter: Option<String>,
    practitioner: Option<String>,
    sim: Option<String>,
}

fn id_param(value: &Option<String>, what: &'static str) -> Result<Option<String>, PageError> {
    match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if is_valid_id(v) => Ok(Some(v.to_string())),
        Some(_) => Err(PageError::bad_request(
            "Not a FHIR id",
            format!("The {what} is not a FHIR id (letters, digits, '-' and '.', up to 64)."),
        )),
    }
}

/// `GET /ehr?patient=&encounter=&practitioner=[&sim=]`: make a launch
/// context and frame the app with it.
async fn ehr(
    State(shared): State<AppState>,
    Query(q): Query<EhrQuery>,
) -> Result<Response, PageError> {
    let sim = apply_sim(&shared, q.sim.as_deref())?;
    let patient = id_param(&q.patient, "patient")?.ok_or_else(|| {
        PageError::bad_request(
            "No patient",
            "The EHR page needs a patient (?patient=…).".into(),
        )
    })?;
    let encounter = id_param(&q.encounter, "encounter")?;
    let practitioner = match id_param(&q.practitioner, "practitioner")? {
        Some(p) => p,
        None => upstream::people(&shared, "Practitioner")
            .await?
            .into_iter()
            .next()
            .map(|p| p.id)
            .ok_or_else(|| {
                PageError::bad_request(
                    "No practitioner",
                    "The FHIR server has no Practitioner; add &practitioner=… to the address."
                        .into(),
                )
            })?,
    };
    let (patient_res, encounter_res, practitioner_res) = futures::join!(
        upstream::read(&shared, "Patient", &patient),
        async {
            match &encounter {
                Some(e) => Some(upstream::read(&shared, "Encounter", e).await),
                None => None,
            }
        },
        upstream::read(&shared, "Practitioner", &practitioner),
    );
    let mut notice = None;
    let (patient_name, birth_date) = match patient_res {
        Ok(r) => {
            let p = upstream::person(&r);
            (
                p.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
                p.map(|p| p.birth_date).unwrap_or_default(),
            )
        }
        Err(e @ UpstreamError::NotFound(_)) => return Err(e.into()),
        Err(e) => {
            notice = Some(e.to_string());
            (format!("Patient {patient}"), String::new())
        }
    };
    let encounter_label = match encounter_res {
        None => String::new(),
        Some(Ok(r)) => {
            let row = upstream::encounter(&r);
            if row.as_ref().and_then(|r| r.patient.as_deref()) != Some(patient.as_str()) {
                return Err(PageError::bad_request(
                    "Encounter of another patient",
                    "This encounter is not the patient's; pick one of theirs.".into(),
                ));
            }
            row.map(|r| r.label).unwrap_or_default()
        }
        Some(Err(e @ UpstreamError::NotFound(_))) => return Err(e.into()),
        Some(Err(_)) => encounter.clone().unwrap_or_default(),
    };
    let practitioner_name = practitioner_res
        .ok()
        .and_then(|r| upstream::person(&r))
        .map(|p| p.name)
        .unwrap_or_else(|| practitioner.clone());
    let launch = shared.store().new_launch(
        LaunchContext {
            practitioner: practitioner.clone(),
            patient: Some(patient.clone()),
            encounter: encounter.clone(),
            ehr: true,
        },
        std::time::Instant::now(),
    );
    let mut frame = shared.app_launch_url.clone();
    frame
        .query_pairs_mut()
        .append_pair("iss", shared.fhir_base().as_str())
        .append_pair("launch", &launch);
    let mut frames = format!("'self' {LOOPBACK_FRAMES}");
    if let Some(o) = origin(&shared.app_launch_url) {
        frames.push(' ');
        frames.push_str(&o);
    }
    let page = EhrPage {
        patient_name,
        birth_date,
        encounter_label,
        practitioner_name,
        patient,
        encounter: encounter.unwrap_or_default(),
        practitioner,
        frame_src: frame.to_string(),
        sims: sim_options(sim),
        notice,
    };
    Ok(with_csp(
        render(page)?,
        &format!("{DEFAULT_CSP}; frame-src {frames}"),
    ))
}

// ---------------------------------------------------------------- picker

struct EncounterOption {
    id: String,
    label: String,
}

#[derive(Template)]
#[template(path = "launcher_picker.html")]
struct PickerPage<'a> {
    client_id: &'a str,
    request: &'a str,
    scope: &'a str,
    needs_patient: bool,
    practitioners: Vec<Person>,
    patients: Vec<Person>,
    encounters: Vec<EncounterOption>,
}

/// The standalone launch's picker: who signs in, for which patient and
/// encounter. Its form posts to `/authorize/approve`.
pub async fn picker(
    shared: &Shared,
    request: &str,
    pending: &Pending,
    redirect: &Url,
) -> Result<Response, PageError> {
    let (practitioners, patients, encounters) = futures::join!(
        upstream::people(shared, "Practitioner"),
        upstream::people(shared, "Patient"),
        upstream::encounters(shared),
    );
    let (practitioners, patients, encounters) = (practitioners?, patients?, encounters?);
    let names: HashMap<&str, &str> = patients
        .iter()
        .map(|p| (p.id.as_str(), p.name.as_str()))
        .collect();
    let encounters = encounters
        .iter()
        .filter_map(|e| {
            let name = names.get(e.patient.as_deref()?)?;
            Some(EncounterOption {
                id: e.id.clone(),
                label: format!("{name}: {}", e.label),
            })
        })
        .collect();
    let page = PickerPage {
        client_id: &pending.client_id,
        request,
        scope: &pending.scope,
        needs_patient: pending.needs_patient,
        practitioners,
        patients,
        encounters,
    };
    // The form's answer is a redirect to the app: allow it as a form target.
    let csp = match origin(redirect) {
        Some(o) => DEFAULT_CSP.replace("form-action 'self'", &format!("form-action 'self' {o}")),
        None => DEFAULT_CSP.to_string(),
    };
    Ok(with_csp(render(page)?, &csp))
}

/// The encounter exists and is `patient`'s.
pub async fn check_encounter(
    shared: &Shared,
    encounter: &str,
    patient: &str,
) -> Result<(), PageError> {
    if !is_valid_id(encounter) {
        return Err(PageError::bad_request(
            "Not a FHIR id",
            "The encounter is not a FHIR id.".into(),
        ));
    }
    let resource = upstream::read(shared, "Encounter", encounter).await?;
    let row = upstream::encounter(&resource);
    if row.and_then(|r| r.patient).as_deref() != Some(patient) {
        return Err(PageError::bad_request(
            "Encounter of another patient",
            "The encounter chosen is not the chosen patient's; pick one of theirs or none.".into(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- assets

/// SMART App Launch 2.2.0 §Styling: Passerelle's colours, for the app.
async fn smart_style() -> Response {
    let font = "system-ui, -apple-system, \"Segoe UI\", Roboto, sans-serif";
    let mut response = axum::Json(json!({
        "color_background": "#f6f7f9",
        "color_error": "#8a1111",
        "color_highlight": "#0b5cad",
        "color_modal_backdrop": "rgba(27, 31, 36, 0.5)",
        "color_success": "#1d6b32",
        "color_text": "#1b1f24",
        "dim_border_radius": "4px",
        "dim_font_size": "15px",
        "dim_spacing_size": "16px",
        "font_family_body": font,
        "font_family_heading": font,
    }))
    .into_response();
    // Apps fetch it from the browser, from their own origin.
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../../templates/passerelle.css"),
    )
        .into_response()
}
