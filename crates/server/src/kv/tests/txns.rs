//! txns
