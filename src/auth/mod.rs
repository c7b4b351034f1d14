//! Authorization: the SMART App Launch 2.2 client (EHR launch, standalone
//! launch, backend services), sessions, and the keys Passerelle signs with.

pub mod keys;
pub mod scopes;
pub mod session;
pub mod smart;
