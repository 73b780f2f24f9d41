"""Implementation of ``costledger.http``; the public names live there."""
