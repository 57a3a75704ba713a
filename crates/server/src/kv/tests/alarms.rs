//! alarms
