//! The state machine of a Task for the patient (Gravity SDOH Clinical Care
//! IG STU 2.3.0, SDOHCC Task For Patient: "Status Management", its table and
//! Figure 1, the Patient Task State Diagram), distinct from the referral
//! Task's ([`crate::referral`]).
//!
//! `Task.status` is bound (required) to SDOHCC ValueSet Task Status:
//! `ready`, `in-progress`, `on-hold`, `completed`, `failed`, `cancelled`,
//! `entered-in-error`; draft, requested, received, accepted and rejected
//! are not used. A Task is created `ready` by the requester; `ready →
//! in-progress | on-hold | completed | failed | cancelled`; `in-progress ⇄
//! on-hold`, both `→ completed | failed | cancelled`; any status `→
//! entered-in-error`. The patient (or their app: the Task's owner, here
//! [`Party::Performer`]) sets in-progress, on-hold, completed and failed;
//! the requester sets ready and entered-in-error; either may cancel, and a
//! cancellation needs `statusReason.text` (SDOHCC Task For Patient,
//! `statusReason` comment).
//!
//! Tasks for the patient that Passerelle wrote before it followed this
//! machine were created `requested`: they are read as `ready`, so they can
//! still be moved on (the move writes a status of this machine).

use crate::referral::{Party, Status, TransitionError};

use Status::*;

/// Who may make a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Patient,
    Either,
}

/// The status a Task for the patient is created with.
pub const INITIAL: Status = Ready;

/// The statuses of SDOHCC ValueSet Task Status.
pub const USED: [Status; 7] = [
    Ready,
    InProgress,
    OnHold,
    Completed,
    Failed,
    Cancelled,
    EnteredInError,
];

/// Every allowed transition, besides `→ entered-in-error` (requester, from
/// any status), per Figure 1 of SDOHCC Task For Patient.
const TRANSITIONS: &[(Status, Status, Who)] = &[
    (Ready, InProgress, Who::Patient),
    (Ready, OnHold, Who::Patient),
    (Ready, Completed, Who::Patient),
    (Ready, Failed, Who::Patient),
    (Ready, Cancelled, Who::Either),
    (InProgress, OnHold, Who::Patient),
    (InProgress, Completed, Who::Patient),
    (InProgress, Failed, Who::Patient),
    (InProgress, Cancelled, Who::Either),
    (OnHold, InProgress, Who::Patient),
    (OnHold, Completed, Who::Patient),
    (OnHold, Failed, Who::Patient),
    (OnHold, Cancelled, Who::Either),
];

/// Statuses that need `statusReason.text`.
pub const NEEDS_REASON: [Status; 1] = [Cancelled];

/// The status a Task for the patient is checked from: `requested`, as
/// Passerelle wrote such Tasks before, counts as `ready`.
fn effective(from: Status) -> Status {
    if from == Requested { Ready } else { from }
}

/// Check a status change of a Task for the patient by `party` (the
/// requester, or the patient: [`Party::Performer`]), with the reason given.
pub fn check(
    from: Status,
    to: Status,
    party: Party,
    reason: Option<&str>,
) -> Result<(), TransitionError> {
    if !USED.contains(&to) {
        return Err(TransitionError::UnusedStatusForPatient(to.code()));
    }
    let from = effective(from);
    if to == EnteredInError {
        if party == Party::Performer {
            return Err(TransitionError::WrongPartyForPatient(
                to.code(),
                "requester",
            ));
        }
    } else {
        let who = TRANSITIONS
            .iter()
            .find(|(f, t, _)| *f == from && *t == to)
            .map(|(_, _, w)| *w)
            .ok_or(TransitionError::NotAllowedForPatient(
                from.code(),
                to.code(),
            ))?;
        if who == Who::Patient && party == Party::Requester {
            return Err(TransitionError::WrongPartyForPatient(to.code(), "patient"));
        }
    }
    if NEEDS_REASON.contains(&to) && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(TransitionError::ReasonRequiredForPatient(to.code()));
    }
    Ok(())
}

/// The statuses `party` may move a Task for the patient in `from` to.
pub fn next(from: Status, party: Party) -> Vec<Status> {
    Status::ALL
        .into_iter()
        .filter(|to| check(from, *to, party, Some("reason")).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of Figure 1 written out pair by pair: (from, to, who may).
    fn expected(from: Status, to: Status, party: Party) -> bool {
        let from = effective(from);
        let patient = party == Party::Performer;
        match (from, to) {
            (_, EnteredInError) => !patient,
            (Ready, InProgress | OnHold | Completed | Failed) => patient,
            (InProgress, OnHold | Completed | Failed) => patient,
            (OnHold, InProgress | Completed | Failed) => patient,
            (Ready | InProgress | OnHold, Cancelled) => true,
            _ => false,
        }
    }

    #[test]
    fn every_pair_of_statuses_is_allowed_or_refused_as_the_ig_says() {
        let mut allowed = 0;
        for from in Status::ALL {
            for to in Status::ALL {
                for party in [Party::Requester, Party::Performer] {
                    let got = check(from, to, party, Some("the patient moved"));
                    assert_eq!(
                        got.is_ok(),
                        expected(from, to, party),
                        "{} -> {} by {party:?}: {got:?}",
                        from.code(),
                        to.code()
                    );
                    allowed += usize::from(got.is_ok());
                }
            }
        }
        // From ready (and requested, read as ready): 4 patient moves and a
        // cancellation by either party; from in-progress and on-hold: 3 and
        // the cancellation; entered-in-error by the requester from any of
        // the 12 statuses.
        assert_eq!(allowed, 2 * (4 + 2) + 2 * (3 + 2) + 12);
    }

    #[test]
    fn a_new_task_is_ready_and_a_legacy_requested_one_moves_like_ready() {
        assert_eq!(INITIAL, Ready);
        assert_eq!(
            next(Requested, Party::Performer),
            next(Ready, Party::Performer)
        );
        assert_eq!(
            next(Ready, Party::Performer),
            vec![Cancelled, InProgress, OnHold, Failed, Completed]
        );
        assert_eq!(
            next(Ready, Party::Requester),
            vec![Cancelled, EnteredInError]
        );
        assert!(next(Completed, Party::Performer).is_empty());
        assert_eq!(next(Completed, Party::Requester), vec![EnteredInError]);
    }

    #[test]
    fn refusals_name_the_rule_of_the_patient_task() {
        let msg = |from, to, party, reason| check(from, to, party, reason).unwrap_err().to_string();
        assert_eq!(
            msg(Ready, Accepted, Party::Performer, None),
            "SDOHCC Tasks for the patient do not use the status accepted."
        );
        assert_eq!(
            msg(Completed, InProgress, Party::Performer, None),
            "A Task for the patient cannot go from completed to in-progress."
        );
        assert_eq!(
            msg(Ready, Completed, Party::Requester, None),
            "Only the patient may move a Task for the patient to completed."
        );
        assert_eq!(
            msg(Ready, EnteredInError, Party::Performer, None),
            "Only the requester may move a Task for the patient to entered-in-error."
        );
        assert_eq!(
            msg(InProgress, Cancelled, Party::Performer, Some(" ")),
            "Cancelling a Task for the patient needs a reason (statusReason)."
        );
        assert!(check(InProgress, Cancelled, Party::Requester, Some("moved away")).is_ok());
        assert!(
            check(Ready, Failed, Party::Performer, None).is_ok(),
            "only a cancellation needs a reason"
        );
        assert!(check(Ready, OnHold, Party::Performer, None).is_ok());
    }
}
