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
# ... and submitted mail back from the gateway (or straight from submission without one): signed here
ORIGINATING = "ORIGINATING"
# Inbound mail passes the S/MIME gateway only when it is encrypted or opaque-signed: a
# Content-Type (of the message or any part) naming pkcs7-mime (application/pkcs7-mime and its
# x- spelling; no MIME parser sees either without the word). Postfix routes by it (header_checks
# FILTER); rspamd tells such mail by it from signed (multipart/signed, checked in the first pass
# by smime_verify) and plain mail
SMIME_CONTENT = "pkcs7-mime"
SMIME_RESULT = "X-Mailstack-SMIME"  # the gateway's verdict on a local copy; rspamd's for plain mail

LOGIN_PORTS = (143, 993, 110, 995, 587, 465)  # IMAP, POP3 and submission: where passwords arrive

POP3_STARTTLS_PORT = 110
# Dovecot's login gates, DOVECOT_ETC/<source>-<name> for each user source: who may log in which
# way, by the domain's settings. Dovecot picks the gate by service (%s) and, for POP3 on
# POP3_STARTTLS_PORT, adds "-starttls": each domain decides for its own users.
PASSDBS = {"imap": lambda d: d.imap, "pop3": lambda d: d.pop3,
           "pop3-starttls": lambda d: d.pop3 and d.pop3_starttls, "smtp": lambda d: True}

MAIL_ROOT = "/var/vmail"  # every mailbox: MAIL_ROOT/domain/local (Dovecot's home)
DOVECOT_ETC = "/etc/dovecot/mailstack"  # Dovecot's files, its own and those others add for it
DOVECOT_SECRET = {"mode": "0640", "user": "root", "group": "dovecot", "secret": True}  # such a file with secrets
# Dovecot reads every *.conf here last: a component adds a block by extending Dovecot's service
# (`extends={"dovecot": ...}`) with a file here
DOVECOT_BLOCKS = f"{DOVECOT_ETC}/conf.d"

NFT_INCLUDED = "/etc/mailstack/nftables.d"  # every *.nft here is part of /etc/nftables.conf
METRICS_DIR = "/var/lib/prometheus/node-exporter"  # *.prom here: node exporter's textfile collector
RSYSLOG_CHECK = "rsyslogd -N1 -f /etc/rsyslog.conf"  # rsyslog's own check of its whole configuration

# The backup tool's record of its last success (`last-backup`: the snapshot; `last-check`),
# each file's time the time it ended: `mailstack status` holds their age to the inventory
BACKUP_RECORDS = "/var/lib/mailstack/backup"

ACCOUNT_TOOL = "/usr/local/sbin/mailstack-account"  # `mailstack account`: the sending limits' holds
LIMITS_KEYS = "mailstack:limits:"  # the prefix of the sending limits' Redis keys (the account tool's only ones)

# Redis on loopback (deploys/redis/), reached by its clients with these: the port, each
# client's database, the `default` user's password (a secret's name), and the account
# tool's own user with its password file
REDIS_PORT = 6379
REDIS_DATABASES = {"rspamd": 0, "nauthilus": 1}  # rspamd's rules and the limits tool share 0
REDIS_PASSWORD = "redis"  # mailstack.secrets.password(inv, REDIS_PASSWORD)
REDIS_ACCOUNT_USER = "mailstack-account"
REDIS_ACCOUNT_PASSWORD = "redis-account"
REDIS_ACCOUNT_SECRET = "/etc/mailstack/redis-account.secret"  # root's: the account tool reads it

# mailstack's rspamd symbol: clamd stopped at one of its limits (rspamd reports that as a failure);
# whoever judges attachments after ClamAV (Peekaboo) waits for it
CLAMAV_UNSCANNED = "CLAM_VIRUS_UNSCANNED"

# The lab's ACME CA (Pebble, deploys/acme_ca): its ACME API, and its management API, whose
# /roots/0 is the current root the lab fetches for its trust stores (mailstack/lab/acme.py)
ACME_CA_ROLE = "acme_ca"
ACME_CA_API_PORT, ACME_CA_MANAGEMENT_PORT = 14000, 15000

PROMETHEUS_PORT = 9090  # on loopback of each monitoring host (deploys/monitoring); `mailstack status` asks it
# filesystems in memory, which hold no mail and fill no disk: the disk alert and `mailstack status` leave them out
VOLATILE_FILESYSTEMS = ("tmpfs", "devtmpfs", "ramfs", "squashfs", "overlay")
