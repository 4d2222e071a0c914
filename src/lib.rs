//! rackform: GitOps for bare-metal Kubernetes on Packet (Equinix Metal).
//!
//! The pipeline is `source → spec → observe → plan → apply → report`; each stage is a module.
//! Start with `docs/ARCHITECTURE.md`, then [`spec`], which reads what users write.

pub mod cli;
pub mod metal;
pub mod sim;
pub mod spec;
