//! Appeals of denied claims and prior authorizations: which kind of appeal,
//! the denial it answers (read from a ClaimResponse or entered by hand), and
//! its plan: filing deadline from the regime table, priority `stat` when
//! expedited, and when an expedited decision is due.
//!
//! The appeal Task profile these values fill is documented in
//! `profiles/appeal-task.md`; the deadlines come from
//! `profiles/appeal-regimes.json` through [`super::coverage::Regime`].

use time::{Date, OffsetDateTime};

use super::coverage::Regime;

/// Code system of denial reasons on claims: X12 Claim Adjustment Reason Codes.
pub const CARC_SYSTEM: &str = "https://x12.org/codes/claim-adjustment-reason-codes";
/// X12 Remittance Advice Remark Codes.
pub const RARC_SYSTEM: &str = "https://x12.org/codes/remittance-advice-remark-codes";
/// X12 886 Health Care Service Review Decision Reason Codes, as Da Vinci PAS
/// (STU 2) names the code system for prior-authorization decisions.
pub const X12_886_SYSTEM: &str = "https://codesystem.x12.org/external/886";

/// The kinds of appeal Passerelle files (`Task.code`, system
/// [`super::visit::APPEAL_TASK_SYSTEM`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppealKind {
    InternalAppeal,
    ExpeditedAppeal,
    ExternalReview,
    StepTherapyException,
    FormularyException,
}

impl AppealKind {
    pub const ALL: [AppealKind; 5] = [
        AppealKind::InternalAppeal,
        AppealKind::ExpeditedAppeal,
        AppealKind::ExternalReview,
        AppealKind::StepTherapyException,
        AppealKind::FormularyException,
    ];

    pub fn code(self) -> &'static str {
        match self {
            AppealKind::InternalAppeal => "internal-appeal",
            AppealKind::ExpeditedAppeal => "expedited-appeal",
            AppealKind::ExternalReview => "external-review",
            AppealKind::StepTherapyException => "step-therapy-exception",
            AppealKind::FormularyException => "formulary-exception",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            AppealKind::InternalAppeal => "Internal appeal",
            AppealKind::ExpeditedAppeal => "Expedited appeal",
            AppealKind::ExternalReview => "External review",
            AppealKind::StepTherapyException => "Step therapy exception request",
            AppealKind::FormularyException => "Formulary exception request",
        }
    }

    pub fn parse(code: &str) -> Option<AppealKind> {
        AppealKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The kind a denial calls for, from the payer's words: a step-therapy
    /// requirement asks for a step-therapy exception, a drug off the
    /// formulary for a formulary exception; anything else is an internal
    /// appeal. The clinician can always choose another kind.
    pub fn suggested_for(denial_text: &str) -> AppealKind {
        let t = denial_text.to_lowercase();
        if t.contains("step therapy") || t.contains("step-therapy") {
            AppealKind::StepTherapyException
        } else if t.contains("formulary") {
            AppealKind::FormularyException
        } else {
            AppealKind::InternalAppeal
        }
    }
}

/// How an appeal ended, recorded when its Task is completed (for the
/// overturn rate in the patterns view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppealOutcome {
    Overturned,
    PartlyOverturned,
    Upheld,
}

impl AppealOutcome {
    pub const ALL: [AppealOutcome; 3] = [
        AppealOutcome::Overturned,
        AppealOutcome::PartlyOverturned,
        AppealOutcome::Upheld,
    ];

    pub fn code(self) -> &'static str {
        match self {
            AppealOutcome::Overturned => "overturned",
            AppealOutcome::PartlyOverturned => "partly-overturned",
            AppealOutcome::Upheld => "upheld",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            AppealOutcome::Overturned => "Denial overturned",
            AppealOutcome::PartlyOverturned => "Partly overturned",
            AppealOutcome::Upheld => "Denial upheld",
        }
    }

    pub fn parse(code: &str) -> Option<AppealOutcome> {
        AppealOutcome::ALL.into_iter().find(|o| o.code() == code)
    }
}

/// Where a denial reason code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonSystem {
    Carc,
    Rarc,
    X12_886,
}

impl ReasonSystem {
    pub const ALL: [ReasonSystem; 3] = [
        ReasonSystem::Carc,
        ReasonSystem::Rarc,
        ReasonSystem::X12_886,
    ];

    pub fn uri(self) -> &'static str {
        match self {
            ReasonSystem::Carc => CARC_SYSTEM,
            ReasonSystem::Rarc => RARC_SYSTEM,
            ReasonSystem::X12_886 => X12_886_SYSTEM,
        }
    }

    /// The short name a form uses.
    pub fn key(self) -> &'static str {
        match self {
            ReasonSystem::Carc => "carc",
            ReasonSystem::Rarc => "rarc",
            ReasonSystem::X12_886 => "x12-886",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ReasonSystem::Carc => "CARC (claim adjustment reason)",
            ReasonSystem::Rarc => "RARC (remittance advice remark)",
            ReasonSystem::X12_886 => "X12 886 (prior authorization decision reason)",
        }
    }

    pub fn parse(key: &str) -> Option<ReasonSystem> {
        ReasonSystem::ALL.into_iter().find(|s| s.key() == key)
    }

    /// Does `code` have the shape of this system's codes? CARC: 1–3 digits
    /// or one of the letters CARC uses (A, B, D, P, W, Y) and digits (A1, B7, P2); RARC: M, N or MA followed by
    /// digits; X12 886: 1–5 letters or digits.
    pub fn accepts(self, code: &str) -> bool {
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
        match self {
            ReasonSystem::Carc => {
                digits(code)
                    || code.len() >= 2
                        && b"ABDPWY".contains(&code.as_bytes()[0])
                        && digits(&code[1..])
            }
            ReasonSystem::Rarc => ["MA", "M", "N"].iter().any(|p| {
                code.strip_prefix(p).is_some_and(|rest| {
                    !rest.is_empty() && rest.len() <= 3 && rest.bytes().all(|b| b.is_ascii_digit())
                })
            }),
            ReasonSystem::X12_886 => {
                !code.is_empty()
                    && code.len() <= 5
                    && code
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            }
        }
    }
}

/// A denial entered by hand, from the payer's notice. The only way to get
/// one is [`HandDenial::parse`], so every field has been checked.
#[derive(Debug, Clone, PartialEq)]
pub struct HandDenial {
    pub payer: String,
    pub notice: Date,
    /// What was denied: a drug or service, as the notice names it.
    pub service: String,
    /// An optional code for it (RxNorm, CPT/HCPCS…), as `system|code`.
    pub service_code: Option<(String, String)>,
    pub reason_system: ReasonSystem,
    pub reason_code: String,
    /// The payer's words, verbatim: never trimmed inside, never rewritten.
    pub text: String,
}

/// The raw fields of the hand-entry form.
#[derive(Debug, Clone, Default)]
pub struct HandDenialFields<'a> {
    pub payer: &'a str,
    pub notice: &'a str,
    pub service: &'a str,
    pub service_system: &'a str,
    pub service_code: &'a str,
    pub reason_system: &'a str,
    pub reason_code: &'a str,
    pub text: &'a str,
}

/// Code systems a hand-entered service code may use.
pub const SERVICE_CODE_SYSTEMS: [(&str, &str); 3] = [
    ("rxnorm", "http://www.nlm.nih.gov/research/umls/rxnorm"),
    ("cpt", "http://www.ama-assn.org/go/cpt"),
    (
        "hcpcs",
        "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
    ),
];

impl HandDenial {
    /// Check every field; all problems are returned at once, each naming
    /// the field, so the form can be corrected in one go.
    pub fn parse(f: &HandDenialFields, today: Date) -> Result<HandDenial, Vec<String>> {
        let mut errors = Vec::new();
        let payer = f.payer.trim();
        if payer.is_empty() {
            errors.push("Payer: enter the payer named on the notice.".to_string());
        }
        let notice = match super::iso_date(f.notice) {
            Some(d) if d > today => {
                errors.push("Notice date: it is in the future.".to_string());
                None
            }
            Some(d) if d.year() < 2000 => {
                errors.push("Notice date: it is before 2000.".to_string());
                None
            }
            Some(d) => Some(d),
            None => {
                errors.push(
                    "Notice date: enter the date printed on the notice (YYYY-MM-DD).".to_string(),
                );
                None
            }
        };
        let service = f.service.trim();
        if service.is_empty() {
            errors.push("Denied service or drug: enter what was denied.".to_string());
        }
        let service_code = match (f.service_system.trim(), f.service_code.trim()) {
            (_, "") => None,
            (key, code) => match SERVICE_CODE_SYSTEMS.iter().find(|(k, _)| *k == key) {
                Some((_, uri))
                    if code.len() <= 20 && code.bytes().all(|b| b.is_ascii_alphanumeric()) =>
                {
                    Some((uri.to_string(), code.to_string()))
                }
                Some(_) => {
                    errors.push("Service code: letters and digits only.".to_string());
                    None
                }
                None => {
                    errors.push("Service code: choose RxNorm, CPT or HCPCS.".to_string());
                    None
                }
            },
        };
        let reason_system = ReasonSystem::parse(f.reason_system.trim());
        let reason_code = f.reason_code.trim().to_uppercase();
        match reason_system {
            None => errors.push("Reason code system: choose CARC, RARC or X12 886.".to_string()),
            Some(s) if !s.accepts(&reason_code) => errors.push(format!(
                "Reason code: {:?} is not a {} code.",
                f.reason_code.trim(),
                s.label()
            )),
            Some(_) => {}
        }
        // The payer's words are kept exactly as typed, only the surrounding
        // blank lines removed.
        let text = f
            .text
            .trim_matches(|c: char| c == '\n' || c == '\r' || c == ' ');
        if text.is_empty() {
            errors.push("Denial reason text: copy the payer's words from the notice.".to_string());
        }
        match (notice, reason_system) {
            (Some(notice), Some(reason_system)) if errors.is_empty() => Ok(HandDenial {
                payer: payer.to_string(),
                notice,
                service: service.to_string(),
                service_code,
                reason_system,
                reason_code,
                text: text.to_string(),
            }),
            _ => Err(errors),
        }
    }
}

/// What an appeal Task records about its timing.
#[derive(Debug, Clone, PartialEq)]
pub struct AppealPlan {
    pub kind: AppealKind,
    pub notice: Date,
    /// Last day to file; `None` when no regime applies (the page then asks
    /// for the date printed on the notice).
    pub deadline: Option<Date>,
    pub expedited: bool,
    /// `stat` when expedited, else `routine`.
    pub priority: &'static str,
    /// When the payer must decide an expedited appeal (72 h in most regimes).
    pub decision_due: Option<OffsetDateTime>,
    /// Where the deadline comes from, to show and to store.
    pub basis: String,
}

/// Plan an appeal of a denial noticed on `notice`. An expedited-appeal kind
/// is always expedited. A deadline read from the notice (`stated`) wins over
/// the regime's: the payer's notice is what binds the patient.
pub fn plan(
    kind: AppealKind,
    expedited: bool,
    notice: Date,
    regime: Option<&Regime>,
    stated: Option<Date>,
    now: OffsetDateTime,
) -> AppealPlan {
    let expedited = expedited || kind == AppealKind::ExpeditedAppeal;
    let (deadline, basis) = match (stated, regime) {
        (Some(d), _) => (Some(d), "the date on the payer's notice".to_string()),
        (None, Some(r)) => (
            Some(r.filing_deadline(notice)),
            format!("{} ({})", r.label, r.citation),
        ),
        (None, None) => (None, "no regime applies: read the notice".to_string()),
    };
    AppealPlan {
        kind,
        notice,
        deadline,
        expedited,
        priority: if expedited { "stat" } else { "routine" },
        decision_due: if expedited {
            regime.and_then(|r| r.expedited_decision_due(now))
        } else {
            None
        },
        basis,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coverage::{Code, RegimeTable};
    use time::macros::{date, datetime};

    fn regime(payer_type: &str) -> Regime {
        RegimeTable::shipped()
            .regime_for(&[Code {
                system: Some("urn:oid:2.16.840.1.113883.3.221.5".into()),
                code: payer_type.into(),
                display: None,
            }])
            .cloned()
            .expect("a regime")
    }

    fn fields<'a>() -> HandDenialFields<'a> {
        HandDenialFields {
            payer: "Keystone Rx",
            notice: "2026-11-13",
            service: "apixaban 5 MG Oral Tablet",
            service_system: "rxnorm",
            service_code: "1364445",
            reason_system: "carc",
            reason_code: "204",
            text: "Drug not on formulary.  Formulary alternative: warfarin.\n",
        }
    }

    #[test]
    fn a_hand_entered_denial_keeps_the_payers_words_verbatim() {
        let d = HandDenial::parse(&fields(), date!(2026 - 11 - 22)).unwrap();
        assert_eq!(
            d.text,
            "Drug not on formulary.  Formulary alternative: warfarin."
        );
        assert_eq!(d.reason_system.uri(), CARC_SYSTEM);
        assert_eq!(
            d.service_code,
            Some((
                "http://www.nlm.nih.gov/research/umls/rxnorm".into(),
                "1364445".into()
            ))
        );
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let bad = HandDenialFields {
            payer: " ",
            notice: "2026-12-01",
            service: "",
            service_system: "icd",
            service_code: "X",
            reason_system: "rarc",
            reason_code: "204",
            text: "\n",
        };
        let errors = HandDenial::parse(&bad, date!(2026 - 11 - 22)).unwrap_err();
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert!(errors[0].starts_with("Payer"));
        assert!(errors[1].contains("future"));
        assert!(errors.iter().any(|e| e.contains("\"204\" is not a RARC")));
        let mut no_date = fields();
        no_date.notice = "13/11/2026";
        assert_eq!(
            HandDenial::parse(&no_date, date!(2026 - 11 - 22)).unwrap_err(),
            vec!["Notice date: enter the date printed on the notice (YYYY-MM-DD).".to_string()]
        );
    }

    #[test]
    fn reason_codes_have_their_systems_shapes() {
        use ReasonSystem::*;
        for (system, ok, bad) in [
            (
                Carc,
                vec!["4", "197", "B7", "P2"],
                vec!["", "2040", "N130", "7a"],
            ),
            (
                Rarc,
                vec!["M15", "N130", "MA01"],
                vec!["197", "MX1", "N", "N1234"],
            ),
            (X12_886, vec!["A1", "0U", "Z9999"], vec!["", "ABCDEF", "a1"]),
        ] {
            for c in ok {
                assert!(system.accepts(c), "{c} is a {system:?} code");
            }
            for c in bad {
                assert!(!system.accepts(c), "{c} is not a {system:?} code");
            }
        }
    }

    #[test]
    fn the_denial_text_suggests_the_kind_of_appeal() {
        assert_eq!(
            AppealKind::suggested_for("Step therapy required: the plan requires trial and failure"),
            AppealKind::StepTherapyException
        );
        assert_eq!(
            AppealKind::suggested_for("Drug not on formulary. Formulary alternative: warfarin."),
            AppealKind::FormularyException
        );
        assert_eq!(
            AppealKind::suggested_for("Not medically necessary."),
            AppealKind::InternalAppeal
        );
        for k in AppealKind::ALL {
            assert_eq!(AppealKind::parse(k.code()), Some(k));
        }
    }

    #[test]
    fn plans_for_each_regime_routine_and_expedited() {
        let now = datetime!(2026-11-22 10:00 UTC);
        let notice = date!(2026 - 11 - 13);
        // Part D: 65 days; expedited: stat, decided within 72 h.
        let p = plan(
            AppealKind::FormularyException,
            true,
            notice,
            Some(&regime("122")),
            None,
            now,
        );
        assert_eq!(p.deadline, Some(date!(2027 - 01 - 17)));
        assert_eq!(p.priority, "stat");
        assert_eq!(p.decision_due, Some(datetime!(2026-11-25 10:00 UTC)));
        // Medicare A/B: 120 days after receipt presumed 5 days after the
        // notice; no expedited clock in the table, still stat.
        let p = plan(
            AppealKind::ExpeditedAppeal,
            false,
            notice,
            Some(&regime("121")),
            None,
            now,
        );
        assert_eq!(p.deadline, Some(date!(2027 - 03 - 18)));
        assert!(p.expedited, "an expedited appeal is expedited");
        assert_eq!((p.priority, p.decision_due), ("stat", None));
        // Employer plan: 180 days, routine.
        let p = plan(
            AppealKind::InternalAppeal,
            false,
            notice,
            Some(&regime("522")),
            None,
            now,
        );
        assert_eq!(p.deadline, Some(date!(2027 - 05 - 12)));
        assert_eq!((p.priority, p.decision_due), ("routine", None));
        // Medicaid managed care: 60 days; Medicare Advantage: 65 days.
        assert_eq!(
            plan(
                AppealKind::InternalAppeal,
                false,
                notice,
                Some(&regime("211")),
                None,
                now
            )
            .deadline,
            Some(date!(2027 - 01 - 12))
        );
        assert_eq!(
            plan(
                AppealKind::InternalAppeal,
                false,
                notice,
                Some(&regime("111")),
                None,
                now
            )
            .deadline,
            Some(date!(2027 - 01 - 17))
        );
        // No regime: no invented deadline; the notice's own date wins.
        let p = plan(AppealKind::InternalAppeal, false, notice, None, None, now);
        assert_eq!(p.deadline, None);
        let p = plan(
            AppealKind::InternalAppeal,
            false,
            notice,
            Some(&regime("522")),
            Some(date!(2027 - 01 - 31)),
            now,
        );
        assert_eq!(p.deadline, Some(date!(2027 - 01 - 31)));
        assert_eq!(p.basis, "the date on the payer's notice");
    }
}
