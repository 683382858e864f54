//! mien-plan
