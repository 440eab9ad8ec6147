-- Push workers find the rows of their lease by its token.
CREATE INDEX outbox_lease ON outbox (leased_by);
