"""The schema's migrations: one linear chain (`versions/`), applied by `gptactions db upgrade`
or at start-up, each with a downgrade (`gptactions db downgrade REVISION`).

The rule: a migration only adds. New tables, indexes, triggers, and columns that are nullable or
have a server default (an older version's inserts do not name them); never a column or table
dropped or renamed, a type narrowed, or a constraint an older version's writes could break, in
the release that stops using it (drop it a release later, once no version that reads it runs).
That is what lets a database a newer version migrated serve an older one, which only warns
(`store/schema.py`): replicas of two versions share it during a rolling upgrade, and a rollback
to the older code needs no downgrade first.

0001 to 0012 follow it, with what an older version then does not do: 0011 moved the rows of
OAuth users to the `@users` tenant (a change of data, the one exception: a version before it
shows those users none of their earlier conversations); before 0003 a revocation does not tell
the other servers' caches, before 0009 a key's own limits are not applied, before 0010 a code
redeemed twice does not revoke its tokens, and before 0012 a key's grace period does not end.
"""
