//! Keeps the Microsoft 365 profile photo update settings of each tenant in
//! line with a `PhotoUpdatePolicy` custom resource.

pub mod cluster_controller;
pub mod cluster_policy;
pub mod conditions;
pub mod controller;
pub mod credentials;
pub mod events;
pub mod fleet;
pub mod graph;
pub mod leader;
pub mod metrics;
pub mod oneshot;
pub mod ownership;
pub mod policy;
pub mod reconcile;
pub mod restore;
pub mod secret_cache;
pub mod settings;
pub mod telemetry;
pub mod validation;
pub mod yaml;
