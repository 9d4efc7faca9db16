-- The members and purchases tables of 0001 are gone: members, phones and
-- purchases are read only on the shop's member replica (`replica.url`,
-- platform::member_db), and nothing reads or writes these copies in
-- firstcome's own database (no service role was ever granted them). Rows
-- left there would be a stale copy: dropped so no one mistakes them for a
-- source of members.

DROP TABLE IF EXISTS purchases;
DROP TABLE IF EXISTS members;
