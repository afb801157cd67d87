"""mailstack S/MIME gateway: multi-tenant domain signing, encryption, decryption and
verification in one pass between Postfix and Postfix, failing closed."""
