ALTER TABLE `models` ADD `keep_warm` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `models` ADD `replicas` integer;