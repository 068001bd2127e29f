//! The CronJob controller: not implemented yet (schedules with time zones, concurrencyPolicy, history limits are planned here).
