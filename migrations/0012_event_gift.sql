-- The gift an event gives, as members read it on the survey page ("₩10,000 coffee
-- gifticon"): `firstcome event create --gift`. Events created before keep the default.

ALTER TABLE events ADD COLUMN gift text NOT NULL DEFAULT '₩10,000 coffee gifticon';
