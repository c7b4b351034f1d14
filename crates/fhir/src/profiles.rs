//! Canonical URLs of the profiles and extensions Passerelle writes.

// --- Referrals routed to the community organisation -----------------------

/// SDOHCC Extension HealthcareService Telecom Appointment (STU 2.3.0): flags a
/// `HealthcareService.telecom` a patient can use to make an appointment
/// (SDOHCC HealthcareService, slice `telecom[AppointmentContact]`).
pub const SDOHCC_TELECOM_APPOINTMENT: &str = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-ExtensionHealthcareServiceTelecomAppointment";
