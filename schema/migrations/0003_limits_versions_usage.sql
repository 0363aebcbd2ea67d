ALTER TABLE `accounts` ADD `monthly_request_quota` integer;--> statement-breakpoint
ALTER TABLE `accounts` ADD `rate_per_second` integer;--> statement-breakpoint
ALTER TABLE `accounts` ADD `rate_burst` integer;--> statement-breakpoint
ALTER TABLE `api_keys` ADD `rate_per_second` integer;--> statement-breakpoint
ALTER TABLE `api_keys` ADD `rate_burst` integer;--> statement-breakpoint
ALTER TABLE `model_versions` ADD `deleted_at` integer;--> statement-breakpoint
ALTER TABLE `usage_events` ADD `shadow_of` integer;--> statement-breakpoint
ALTER TABLE `usage_events` ADD `matched` integer;--> statement-breakpoint
CREATE INDEX `usage_account_time_idx` ON `usage_events` (`account_id`,`created_at`);