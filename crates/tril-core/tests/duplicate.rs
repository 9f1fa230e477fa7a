//! Two crates registering one id is a start-up error naming both.
//! (Entries are submitted with explicit crate names to stand for two plugin crates.)

use tril_core::config::Section;
use tril_core::plugin::{BuildCtx, LrSchedule, PluginError};
use tril_core::registry::{check_config, check_duplicates, Kind, SchedulerEntry};

#[derive(Debug)]
struct Flat;

impl LrSchedule for Flat {
    fn factor(&self, _step: u64) -> f64 {
        1.0
    }
}

fn build(_: &Section<'_>, _: &BuildCtx<'_>) -> Result<Box<dyn LrSchedule>, PluginError> {
    Ok(Box::new(Flat))
}

inventory::submit! {
    SchedulerEntry { id: "flat", doc: "first", crate_name: "plugin-one", check: check_config::<serde::de::IgnoredAny>, build }
}
inventory::submit! {
    SchedulerEntry { id: "flat", doc: "second", crate_name: "plugin-two", check: check_config::<serde::de::IgnoredAny>, build }
}

#[test]
fn duplicate_ids_fail_naming_both_crates() {
    let err = check_duplicates().unwrap_err().to_string();
    assert_eq!(err, "duplicate scheduler id `flat` registered by crate `plugin-one` and by crate `plugin-two`");
    let listed: Vec<_> = Kind::Scheduler.list().into_iter().map(|l| (l.id, l.crate_name)).collect();
    assert_eq!(listed, vec![("flat", "plugin-one"), ("flat", "plugin-two")]);
}
