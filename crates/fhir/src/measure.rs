//! The patterns' export as FHIR: the aggregates of a [`Report`] as an R4
//! MeasureReport (type `summary`), the de-identified counts only, each
//! group defined in words, the small-cell rule stated on the report.

use serde_json::{Value, json};

use crate::domain::patterns::{Cell, Report, SUPPRESSION_RULE};

/// Canonical base of the measures' definitions.
pub const MEASURE_BASE: &str = "http://passerelle.example.org/fhir/Measure/";

/// The aggregates as a FHIR R4 MeasureReport (type `summary`): one group per
/// measure, strata for its categories; a suppressed stratum has no score
/// and the `data-absent-reason` `masked`.
pub fn measure_report(report: &Report) -> Value {
    let masked = json!([{ "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "masked" }]);
    // A group with a stratum per cell (a table by its dimension, a trend by month).
    let stratified = |id: &str,
                      title: &str,
                      definition: &str,
                      dimension: &str,
                      unit: &str,
                      cells: &[Cell]| {
        let strata: Vec<Value> = cells
            .iter()
            .map(|c| match c.value {
                Some(v) => json!({ "value": { "text": c.label }, "measureScore": { "value": v, "unit": unit } }),
                None => json!({ "value": { "text": c.label }, "extension": masked }),
            })
            .collect();
        json!({
            "id": id,
            "code": { "text": format!("{title}. {definition}") },
            "stratifier": [{ "code": [{ "text": dimension }], "stratum": strata }]
        })
    };
    // A score, or the masked extension when it is withheld.
    let scored = |mut g: Value, value: Option<Value>, unit: &str| {
        match value {
            Some(v) => g["measureScore"] = json!({ "value": v, "unit": unit }),
            None => g["extension"] = masked.clone(),
        }
        g
    };
    let mut groups = Vec::new();
    for t in &report.tables {
        let g = stratified(
            &t.id,
            &t.title,
            &t.definition,
            &t.dimension,
            &t.unit,
            &t.cells,
        );
        groups.push(scored(g, t.total.map(|v| json!(v)), &t.unit));
    }
    let measured = report
        .rates
        .iter()
        .map(|r| (&r.id, &r.title, &r.definition, r.percent, "%"))
        .chain(
            report
                .medians
                .iter()
                .map(|m| (&m.id, &m.title, &m.definition, m.days, "d")),
        );
    for (id, title, definition, value, unit) in measured {
        let g = json!({ "id": id, "code": { "text": format!("{title}. {definition}") } });
        groups.push(scored(g, value.map(|v| json!(v)), unit));
    }
    for t in &report.trends {
        groups.push(stratified(
            &t.id,
            &t.title,
            &t.definition,
            "month",
            &t.unit,
            &t.points,
        ));
    }
    json!({
        "resourceType": "MeasureReport",
        "status": "complete",
        "type": "summary",
        "measure": format!("{MEASURE_BASE}passerelle-patterns"),
        "date": report.computed,
        "period": { "start": report.period.0, "end": report.period.1 },
        "extension": [{ "url": "http://passerelle.example.org/fhir/StructureDefinition/suppression-rule", "valueString": SUPPRESSION_RULE }],
        "group": groups,
    })
}
