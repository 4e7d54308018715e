//! Who is calling and what they may do, as pure functions: SigV4 signature verification (and
//! signing, for Gantry's own clients), and IAM policy documents with their evaluation. No I/O:
//! the control plane looks up keys and policies and hands them in.

pub mod client;
pub mod managed;
pub mod pinning;
pub mod policy;
pub mod sigv4;
