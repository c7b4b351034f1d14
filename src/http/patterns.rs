//! The patterns view: measures across the practice's patients over a
//! period, as tables with server-rendered SVG charts, and the de-identified
//! export (CSV and a FHIR MeasureReport of the aggregates only).
//!
//! * `GET /l/{launch}/patterns` shows the last result with its date (or
//!   the progress of the computation running);
//! * `POST /l/{launch}/patterns` (re)computes it for a period, in the
//!   background, with the EHR's Backend Services token;
//! * `GET /l/{launch}/patterns/export.csv` and `…/measure-report.json`
//!   download the last result.
//!
//! The population is read by FHIR Bulk Data export where the EHR offers
//! it, else by paged searches (`fhir::patterns`); the page says which.
//!
//! Every count shown or exported has gone through the small-cell rule of
//! [`crate::domain::patterns`]: no cell of fewer than 11 patients, and no
//! total that would reveal one.

use askama::Template;
use axum::Router;
use axum::extract::{Form as AxumForm, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use super::clock::today;
use super::error::render;
use super::extract::{Coordinator, Launched, check_csrf};
use super::{AppError, AppState};
use crate::domain::patterns::{Cell, Period, Report, SUPPRESSION_RULE};
use crate::fhir::measure::measure_report;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/l/{id}/patterns", get(page).post(refresh))
        .route("/l/{id}/patterns/export.csv", get(export_csv))
        .route(
            "/l/{id}/patterns/measure-report.json",
            get(export_measure_report),
        )
}

/// A bar of a chart, laid out.
struct Bar {
    label: String,
    value: String,
    y: u32,
    width: u32,
    suppressed: bool,
}

/// A horizontal bar chart (or, for trends, one bar a month), as SVG.
struct Chart {
    id: String,
    title: String,
    definition: String,
    unit: String,
    dimension: String,
    height: u32,
    bars: Vec<Bar>,
    total: String,
    /// The table beside the chart: (category, value).
    rows: Vec<(String, String)>,
    /// Categories in the table but not drawn (a table's chart draws the
    /// largest [`MAX_BARS`]; a trend draws every month).
    more: usize,
}

const BAR_AREA: f64 = 380.0;
const ROW: u32 = 22;
const MAX_BARS: usize = 12;

fn shown(c: &Cell) -> String {
    match c.value {
        Some(v) => v.to_string(),
        None => "< 11".into(),
    }
}

fn chart(
    id: &str,
    title: &str,
    definition: &str,
    unit: &str,
    dimension: &str,
    cells: &[Cell],
    total: Option<Option<u64>>,
) -> Chart {
    let max = cells
        .iter()
        .filter_map(|c| c.value)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let drawn = if total.is_some() {
        MAX_BARS
    } else {
        cells.len()
    };
    let bars: Vec<Bar> = cells
        .iter()
        .take(drawn)
        .enumerate()
        .map(|(i, c)| Bar {
            label: c.label.chars().take(34).collect(),
            value: shown(c),
            y: i as u32 * ROW,
            width: c
                .value
                .map(|v| ((v as f64 / max) * BAR_AREA).round().max(1.0) as u32)
                .unwrap_or(0),
            suppressed: c.value.is_none(),
        })
        .collect();
    Chart {
        id: id.to_string(),
        title: title.to_string(),
        definition: definition.to_string(),
        unit: unit.to_string(),
        dimension: dimension.to_string(),
        height: (bars.len() as u32).max(1) * ROW + 4,
        bars,
        total: match total {
            Some(Some(t)) => t.to_string(),
            Some(None) => "withheld".into(),
            None => String::new(),
        },
        rows: cells.iter().map(|c| (c.label.clone(), shown(c))).collect(),
        more: cells.len().saturating_sub(drawn),
    }
}

#[derive(Template)]
#[template(path = "patterns.html")]
struct PatternsPage {
    launch_id: String,
    csrf: String,
    start: String,
    end: String,
    running: Option<String>,
    /// (computed at, period start, period end) of the result shown.
    computed: Option<(String, String, String)>,
    /// How its records were read (Bulk Data export or searches).
    read_path: String,
    error: Option<String>,
    rule: &'static str,
    rates: Vec<(String, String, String, String)>,
    medians: Vec<(String, String, String, String)>,
    repeated: Vec<(String, String, String)>,
    charts: Vec<Chart>,
    trends: Vec<Chart>,
}

/// How the page shows a withheld rate or median.
const WITHHELD: &str = "< 11 patients: withheld";

fn percent(p: Option<f64>) -> String {
    p.map(|p| format!("{p:.1} %"))
        .unwrap_or_else(|| WITHHELD.into())
}

async fn page(
    State(state): State<AppState>,
    coordinator: Coordinator,
) -> Result<Response, AppError> {
    coordinator.require_whole_practice(&state).await?;
    let Coordinator { launch, queue } = coordinator;
    let last = queue.patterns();
    let today = today();
    let default = Period {
        start: today - time::Duration::days(365),
        end: today,
    };
    let report = last.report.as_ref();
    let error = last.error.clone();
    let period = last.period.unwrap_or(default);
    let mut page = PatternsPage {
        launch_id: launch.id.clone(),
        csrf: launch.csrf.clone(),
        start: period.start.to_string(),
        end: period.end.to_string(),
        running: last.running.then(|| queue.patterns_progress()),
        computed: report.map(|r| (r.computed.clone(), r.period.0.clone(), r.period.1.clone())),
        read_path: report.map(|r| r.read.words()).unwrap_or_default(),
        error,
        rule: SUPPRESSION_RULE,
        rates: vec![],
        medians: vec![],
        repeated: vec![],
        charts: vec![],
        trends: vec![],
    };
    if let Some(r) = report {
        page.rates = r
            .rates
            .iter()
            .map(|x| {
                (
                    x.title.clone(),
                    percent(x.percent),
                    match (x.numerator, x.denominator) {
                        (Some(n), Some(d)) => format!("{n} of {d}"),
                        _ => String::new(),
                    },
                    x.definition.clone(),
                )
            })
            .collect();
        page.medians = r
            .medians
            .iter()
            .map(|m| {
                (
                    m.title.clone(),
                    m.days
                        .map(|d| format!("{d:.1} days"))
                        .unwrap_or_else(|| WITHHELD.into()),
                    m.n.map(|n| format!("n = {n}")).unwrap_or_default(),
                    m.definition.clone(),
                )
            })
            .collect();
        page.repeated = r
            .repeated
            .iter()
            .map(|x| (x.payer.clone(), x.item.clone(), x.patients.to_string()))
            .collect();
        page.charts = r
            .tables
            .iter()
            .map(|t| {
                chart(
                    &t.id,
                    &t.title,
                    &t.definition,
                    &t.unit,
                    &t.dimension,
                    &t.cells,
                    Some(t.total),
                )
            })
            .collect();
        page.trends = r
            .trends
            .iter()
            .map(|t| {
                chart(
                    &t.id,
                    &t.title,
                    &t.definition,
                    &t.unit,
                    "month",
                    &t.points,
                    None,
                )
            })
            .collect();
    }
    render(page)
}

#[derive(Deserialize)]
struct RefreshForm {
    csrf: String,
    start: String,
    end: String,
}

async fn refresh(
    State(state): State<AppState>,
    Launched(launch): Launched,
    AxumForm(form): AxumForm<RefreshForm>,
) -> Result<Response, AppError> {
    check_csrf(&launch, &form.csrf)?;
    let coordinator = Coordinator::of(&state, launch)?;
    coordinator.require_whole_practice(&state).await?;
    let Coordinator { launch, queue } = coordinator;
    let (Some(start), Some(end)) = (
        crate::domain::iso_date(&form.start),
        crate::domain::iso_date(&form.end),
    ) else {
        return Err(AppError::BadRequest(
            "Give the period as two dates (YYYY-MM-DD).".into(),
        ));
    };
    if start > end || (end - start).whole_days() > 3 * 366 {
        return Err(AppError::BadRequest(
            "The period must start before it ends and last at most three years.".into(),
        ));
    }
    if !queue.start_patterns(Period { start, end }) {
        return Err(AppError::BadRequest(
            "The measures cannot be computed yet: the EHR's Backend Services are not connected."
                .into(),
        ));
    }
    Ok(Redirect::to(&format!("/l/{}/patterns", launch.id)).into_response())
}

/// The last result computed, for the exports.
fn last_report(c: &Coordinator) -> Result<Report, AppError> {
    c.queue
        .patterns()
        .report
        .ok_or_else(|| AppError::BadRequest("Compute the measures first.".into()))
}

/// A text cell a spreadsheet will not run: a cell starting with `=`, `+`,
/// `-`, `@`, a tab or a carriage return is a formula to Excel and
/// LibreOffice (OWASP "CSV Injection"), so it is prefixed with `'`, which
/// they show as text. Categories come from the EHR's data (payer names,
/// items, denial reasons), which anyone who can write a claim controls.
fn inert(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

/// One CSV row per exported value: aggregates only, each with its
/// measure's definition, the period and the suppression rule.
pub fn csv(report: &Report) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "kind",
        "measure",
        "title",
        "dimension",
        "category",
        "value",
        "unit",
        "period_start",
        "period_end",
        "definition",
        "suppression_rule",
    ])?;
    let (ps, pe) = (&report.period.0, &report.period.1);
    let mut row = |kind: &str,
                   id: &str,
                   title: &str,
                   dim: &str,
                   cat: &str,
                   value: String,
                   unit: &str,
                   def: &str| {
        w.write_record([
            kind,
            &inert(id),
            &inert(title),
            &inert(dim),
            &inert(cat),
            &value,
            &inert(unit),
            ps,
            pe,
            &inert(def),
            SUPPRESSION_RULE,
        ])
    };
    for t in &report.tables {
        for c in &t.cells {
            row(
                "table",
                &t.id,
                &t.title,
                &t.dimension,
                &c.label,
                shown(c),
                &t.unit,
                &t.definition,
            )?;
        }
        row(
            "table-total",
            &t.id,
            &t.title,
            &t.dimension,
            "total",
            t.total
                .map(|v| v.to_string())
                .unwrap_or_else(|| "withheld".into()),
            &t.unit,
            &t.definition,
        )?;
    }
    let measured = report
        .rates
        .iter()
        .map(|r| ("rate", &r.id, &r.title, r.percent, "percent", &r.definition))
        .chain(
            report
                .medians
                .iter()
                .map(|m| ("median", &m.id, &m.title, m.days, "days", &m.definition)),
        );
    for (kind, id, title, value, unit, definition) in measured {
        let value = value
            .map(|v| format!("{v:.1}"))
            .unwrap_or_else(|| "< 11".into());
        row(kind, id, title, "", "", value, unit, definition)?;
    }
    for r in &report.repeated {
        row(
            "repeated-denial",
            "repeated-denials",
            "The same item denied by the same payer for several patients",
            "payer and item",
            &format!("{} | {}", r.payer, r.item),
            r.patients.to_string(),
            "patients",
            "Listed only when 11 or more patients, their number given as a band (11-19, 20-49, 50-99, 100 or more).",
        )?;
    }
    for t in &report.trends {
        for c in &t.points {
            row(
                "trend",
                &t.id,
                &t.title,
                "month",
                &c.label,
                shown(c),
                &t.unit,
                &t.definition,
            )?;
        }
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

async fn export_csv(
    State(state): State<AppState>,
    coordinator: Coordinator,
) -> Result<Response, AppError> {
    coordinator.require_whole_practice(&state).await?;
    let report = last_report(&coordinator)?;
    let body = csv(&report)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"passerelle-patterns.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

async fn export_measure_report(
    State(state): State<AppState>,
    coordinator: Coordinator,
) -> Result<Response, AppError> {
    coordinator.require_whole_practice(&state).await?;
    let report = last_report(&coordinator)?;
    let mr = measure_report(&report);
    state.schema()?.validate(&mr)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/fhir+json"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"passerelle-patterns-measure-report.json\"",
            ),
        ],
        serde_json::to_vec_pretty(&mr)?,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::patterns::{Accumulator, Denial};
    use time::macros::{date, datetime};

    /// 30 denials by Sunrise, 4 by Harbor (suppressed, and Sunrise with it,
    /// since the total would give Harbor back), over a year.
    fn report() -> Report {
        let mut a = Accumulator::new(Period {
            start: date!(2025 - 01 - 01),
            end: date!(2025 - 12 - 31),
        });
        for (prefix, payer, n) in [("s", "Sunrise", 30), ("h", "Harbor", 4)] {
            for i in 0..n {
                a.denial(Denial {
                    id: format!("{prefix}{i}"),
                    patient: format!("{prefix}{i}"),
                    payer: payer.into(),
                    plan_type: None,
                    item: Some("72148 MRI lumbar spine".into()),
                    reasons: vec!["50".into()],
                    date: date!(2025 - 03 - 01),
                });
            }
        }
        a.finish(datetime!(2026-01-05 09:00 UTC))
    }

    #[test]
    fn the_csv_states_period_definition_and_rule_on_every_row_and_shows_no_small_count() {
        let text = String::from_utf8(csv(&report()).unwrap()).unwrap();
        let mut rows = ::csv::Reader::from_reader(text.as_bytes());
        let header = rows.headers().unwrap().clone();
        assert_eq!(&header[5], "value");
        let rows: Vec<_> = rows.records().map(Result::unwrap).collect();
        assert!(rows.len() > 20);
        for r in &rows {
            assert_eq!((&r[7], &r[8]), ("2025-01-01", "2025-12-31"));
            assert!(!r[9].is_empty(), "a definition on {r:?}");
            assert_eq!(&r[10], SUPPRESSION_RULE);
        }
        let value = |measure: &str, category: &str| {
            rows.iter()
                .find(|r| &r[1] == measure && &r[4] == category)
                .map(|r| r[5].to_string())
                .unwrap_or_else(|| panic!("no {measure} / {category}"))
        };
        assert_eq!(value("denials-by-payer", "Harbor"), "< 11");
        // Harbor's 4 would follow from Sunrise's 30 and a total of 34.
        assert_eq!(value("denials-by-payer", "Sunrise"), "< 11");
        assert_eq!(
            value("repeated-denials", "Sunrise | 72148 MRI lumbar spine"),
            "20-49"
        );
        // Both withheld, the total reveals neither.
        assert_eq!(value("denials-by-payer", "total"), "34");
    }

    #[test]
    fn a_category_that_a_spreadsheet_would_run_is_exported_as_text() {
        let mut a = Accumulator::new(Period {
            start: date!(2025 - 01 - 01),
            end: date!(2025 - 12 - 31),
        });
        for (i, payer) in (0..24).map(|i| (i, "=HYPERLINK(\"http://x.example\",\"Pay\")")) {
            a.denial(Denial {
                id: format!("d{i}"),
                patient: format!("p{i}"),
                payer: payer.into(),
                plan_type: None,
                item: Some(if i % 2 == 0 { "@SUM(A1)" } else { "-2+3" }.into()),
                reasons: vec!["+50".into()],
                date: date!(2025 - 03 - 01),
            });
        }
        let text =
            String::from_utf8(csv(&a.finish(datetime!(2026-01-05 09:00 UTC))).unwrap()).unwrap();
        let mut rows = ::csv::Reader::from_reader(text.as_bytes());
        let categories: Vec<String> = rows.records().map(|r| r.unwrap()[4].to_string()).collect();
        assert!(
            categories.iter().any(|c| c.starts_with("'=HYPERLINK")),
            "the payer exported as text: {categories:?}"
        );
        for c in &categories {
            assert!(
                !c.starts_with(['=', '+', '-', '@']),
                "a formula left in {c:?}"
            );
        }
        assert_eq!(inert("Sunrise"), "Sunrise");
        assert_eq!(inert("\tx"), "'\tx");
    }

    #[test]
    fn the_measure_report_is_valid_r4_and_masks_what_is_withheld() {
        let mr = measure_report(&report());
        let schema =
            crate::fhir::SchemaValidator::load(&crate::config::cache_dir().join("definitions"))
                .expect("the FHIR schema is installed by ./scripts/test");
        schema.validate(&mr).unwrap();
        assert_eq!(mr["period"]["start"], "2025-01-01");
        assert_eq!(mr["extension"][0]["valueString"], SUPPRESSION_RULE);
        let payers = mr["group"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["id"] == "denials-by-payer")
            .unwrap();
        assert!(
            payers["code"]["text"]
                .as_str()
                .unwrap()
                .contains("by the payer")
        );
        for stratum in payers["stratifier"][0]["stratum"].as_array().unwrap() {
            assert!(stratum["measureScore"].is_null(), "{stratum}");
            assert_eq!(stratum["extension"][0]["valueCode"], "masked");
        }
        assert_eq!(payers["measureScore"]["value"], 34, "the total");
    }

    #[test]
    fn a_trend_draws_every_month_and_a_long_table_says_what_it_leaves_out() {
        let cells = |n: u64| -> Vec<Cell> {
            (0..n)
                .map(|i| Cell {
                    label: format!("c{i}"),
                    value: Some(100 - i),
                    patients: 100,
                })
                .collect()
        };
        // A year from the 22nd touches 13 months: all are drawn.
        let c = chart("t", "T", "d", "denials", "month", &cells(13), None);
        assert_eq!((c.bars.len(), c.more), (13, 0));
        let cells = cells(15);
        let c = chart("t", "T", "d", "denials", "payer", &cells, Some(Some(1395)));
        assert_eq!((c.bars.len(), c.rows.len(), c.more), (MAX_BARS, 15, 3));
    }
}
