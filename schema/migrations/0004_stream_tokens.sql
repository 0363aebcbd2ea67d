ALTER TABLE `model_versions` ADD `tokenizer_sha256` text;--> statement-breakpoint
ALTER TABLE `model_versions` ADD `tokenizer_size` integer;--> statement-breakpoint
ALTER TABLE `usage_events` ADD `tokens_in` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `usage_events` ADD `tokens_out` integer DEFAULT 0 NOT NULL;