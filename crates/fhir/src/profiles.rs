//! The profiles Passerelle claims in `meta.profile` of what it writes: one
//! canonical URL per kind of resource, so that a server that validates on
//! write (or a reader that checks conformance) knows which rules to apply.
//!
//! The SDOH ones are the HL7 Gravity SDOH Clinical Care IG STU 2.3.0
//! (<http://hl7.org/fhir/us/sdoh-clinicalcare/STU2.3/>), whose profiles
//! derive from US Core 7.0.0; the others are US Core 7.0.0
//! (<http://hl7.org/fhir/us/core/STU7/>) and SDC 3.0.0
//! (<http://hl7.org/fhir/uv/sdc/>). Where no published profile fits (the
//! appeal Task), the profile is Passerelle's own, under its own base.
//!
//! `profiles/conformance.json` holds the rules of each one that the test
//! server enforces; `every_claimed_profile_has_rules` checks that none is
//! claimed without them.

use serde_json::{Value, json};

/// Base of the Gravity SDOH Clinical Care IG's StructureDefinitions.
pub const SDOHCC_BASE: &str = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/";
/// Base of US Core's StructureDefinitions.
pub const US_CORE_BASE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/";
/// Base of Passerelle's own StructureDefinitions (resources no IG profiles).
pub const PASSERELLE_BASE: &str = "http://passerelle.example.org/fhir/StructureDefinition/";

/// SDOHCC Condition: an SDOH health concern or problem.
pub const SDOHCC_CONDITION: &str =
    "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-Condition";
/// SDOHCC Observation Screening Response: one question and its answer.
pub const SDOHCC_OBSERVATION_SCREENING_RESPONSE: &str = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-ObservationScreeningResponse";
/// SDOHCC ServiceRequest: the referral.
pub const SDOHCC_SERVICE_REQUEST: &str =
    "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-ServiceRequest";
/// SDOHCC Task for Referral Management: the Task that carries a referral
/// to the organization that fulfils it.
pub const SDOHCC_TASK_REFERRAL: &str =
    "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-TaskForReferralManagement";
/// SDOHCC Task for Patient: a task the patient is asked to do.
pub const SDOHCC_TASK_PATIENT: &str =
    "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-TaskForPatient";
/// SDOHCC Consent: the patient's consent to share information.
pub const SDOHCC_CONSENT: &str =
    "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-Consent";
/// SDOHCC HealthcareService: a community service that takes referrals.
pub const SDOHCC_HEALTHCARE_SERVICE: &str =
    "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-HealthcareService";
/// SDOHCC Location: where a community service is given (on US Core
/// Location).
pub const SDOHCC_LOCATION: &str =
    "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-Location";
/// US Core Organization: the organisation that provides a community
/// service (SDOHCC references organisations as US Core Organization).
pub const US_CORE_ORGANIZATION: &str =
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-organization";
/// US Core QuestionnaireResponse: the screening form as answered.
pub const US_CORE_QUESTIONNAIRE_RESPONSE: &str =
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-questionnaireresponse";
/// US Core DocumentReference: a stored letter.
pub const US_CORE_DOCUMENT_REFERENCE: &str =
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-documentreference";
/// US Core Patient (the fixtures' patients).
pub const US_CORE_PATIENT: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient";
/// SDC Questionnaire: the screening instruments Passerelle publishes.
pub const SDC_QUESTIONNAIRE: &str =
    "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire";
/// Subscriptions R5 Backport Subscription: the queue's Task subscription.
pub const BACKPORT_SUBSCRIPTION: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription";
/// Passerelle's appeal Task (no IG profiles a payer-appeal work item).
pub const PASSERELLE_APPEAL_TASK: &str =
    "http://passerelle.example.org/fhir/StructureDefinition/appeal-task";

/// SDOHCC Extension HealthcareService Telecom Appointment (STU 2.3.0): flags a
/// `HealthcareService.telecom` a patient can use to make an appointment
/// (SDOHCC HealthcareService, slice `telecom[AppointmentContact]`).
pub const SDOHCC_TELECOM_APPOINTMENT: &str = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-ExtensionHealthcareServiceTelecomAppointment";

/// Every profile Passerelle claims somewhere.
pub const CLAIMED: [&str; 15] = [
    SDC_QUESTIONNAIRE,
    SDOHCC_HEALTHCARE_SERVICE,
    SDOHCC_LOCATION,
    US_CORE_ORGANIZATION,
    SDOHCC_CONDITION,
    SDOHCC_OBSERVATION_SCREENING_RESPONSE,
    SDOHCC_SERVICE_REQUEST,
    SDOHCC_TASK_REFERRAL,
    SDOHCC_TASK_PATIENT,
    SDOHCC_CONSENT,
    US_CORE_QUESTIONNAIRE_RESPONSE,
    US_CORE_DOCUMENT_REFERENCE,
    US_CORE_PATIENT,
    BACKPORT_SUBSCRIPTION,
    PASSERELLE_APPEAL_TASK,
];

/// `meta` claiming `profile` (and keeping what `meta` already holds).
pub fn claim(resource: &mut Value, profile: &str) {
    if !resource["meta"].is_object() {
        resource["meta"] = json!({});
    }
    resource["meta"]["profile"] = json!([profile]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claiming_keeps_the_security_labels() {
        let mut r =
            json!({ "resourceType": "Condition", "meta": { "security": [{ "code": "R" }] } });
        claim(&mut r, SDOHCC_CONDITION);
        assert_eq!(r["meta"]["security"][0]["code"], "R");
        assert_eq!(r["meta"]["profile"][0], SDOHCC_CONDITION);
        let mut bare = json!({ "resourceType": "Condition", "meta": null });
        claim(&mut bare, SDOHCC_CONDITION);
        assert_eq!(bare["meta"]["profile"][0], SDOHCC_CONDITION);
    }

    #[test]
    fn every_claimed_profile_is_under_a_known_base() {
        for p in CLAIMED {
            assert!(
                [
                    SDOHCC_BASE,
                    US_CORE_BASE,
                    PASSERELLE_BASE,
                    "http://hl7.org/fhir/uv/sdc/",
                    "http://hl7.org/fhir/uv/subscriptions-backport/"
                ]
                .iter()
                .any(|b| p.starts_with(b)),
                "{p}"
            );
        }
    }
}
