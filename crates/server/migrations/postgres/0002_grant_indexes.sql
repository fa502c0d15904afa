-- Pending grants are few at any time: this index lets the in-progress and timeout counts read
-- only them instead of every grant of the group.
CREATE INDEX grants_group_pending ON grants (group_id, outcome, granted_at);
