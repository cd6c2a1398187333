-- dubfarm schema, version 6: job names and labels (`submit --name`, `--label k=v`), and the
-- record of `dubfarm gc` removing a finished job's files.
--
-- labels is a JSON object of strings; `jobs --label k=v` filters with `labels @> '{"k":"v"}'`,
-- which the GIN index answers. media_removed_at is set when gc deleted the job's inputs and
-- output from the media store: the row stays (history, events), `fetch` says why there is
-- nothing to download.
ALTER TABLE jobs ADD COLUMN name text;
ALTER TABLE jobs ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(labels) = 'object');
ALTER TABLE jobs ADD COLUMN media_removed_at timestamptz;
CREATE INDEX jobs_labels ON jobs USING gin (labels jsonb_path_ops);
CREATE INDEX jobs_name ON jobs (name) WHERE name IS NOT NULL;
