"""What several components agree on: names, paths and ports on a host that one component
writes or serves and another refers to. They live here, owned by none, so that no component
imports another to learn them; a component's own internals stay in its folder. (The host's
TLS files: mailstack/tls.py; the ports and topology between hosts: mailstack/plan.py.)"""

# Postfix's milter daemon names (rspamd sees them as MTA-Name): submitted mail on its way to
# the S/MIME gateway (checked, DKIM-signed only when it comes back) ...
SUBMISSION_VIA_GATEWAY = "SUBMISSION-VIA-SMIME"
# ... and inbound mail the gateway decrypted: scanned again as inbound mail, never signed;
# what would be rejected is held (the sender's session is over: a bounce could hit a forger)
SMIME_DECRYPTED = "SMIME-DECRYPTED"

LOGIN_PORTS = (143, 993, 110, 995, 587, 465)  # IMAP, POP3 and submission: where passwords arrive

MAIL_ROOT = "/var/vmail"  # every mailbox: MAIL_ROOT/domain/local (Dovecot's home)
DOVECOT_ETC = "/etc/dovecot/mailstack"  # Dovecot's files, its own and those others add for it
DOVECOT_SECRET = {"mode": "0640", "user": "root", "group": "dovecot", "secret": True}  # such a file with secrets

NFT_INCLUDED = "/etc/mailstack/nftables.d"  # every *.nft here is part of /etc/nftables.conf
METRICS_DIR = "/var/lib/prometheus/node-exporter"  # *.prom here: node exporter's textfile collector
RSYSLOG_CHECK = "rsyslogd -N1 -f /etc/rsyslog.conf"  # rsyslog's own check of its whole configuration

ACCOUNT_TOOL = "/usr/local/sbin/mailstack-account"  # `mailstack account`: the sending limits' holds
LIMITS_KEYS = "mailstack:limits:"  # the prefix of the sending limits' Redis keys (the account tool's only ones)
