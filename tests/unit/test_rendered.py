"""Rendered files as a table: an inventory (a change to the small valid one, or an
example), a host, a file, and lines that must and must not be in it. The files are
what the deploys install, built from the host's plan without touching any host."""

import hashlib
import importlib.util
import json
import subprocess
import tarfile

import pytest
from pyinfra.api import FileUploadCommand
from unitdata import ROOT, VALID

from deploys import COMPONENTS, configured, ops
from deploys.clamav import EICAR
from deploys.exporters import METRICS
from mailstack.component import File, Service
from mailstack.inventory import check_text
from mailstack.plan import plans

LAB = (ROOT / "inventories" / "lab.yml").read_text()
POP3_MIX = VALID.replace("    mx: [mx1]\n    dmarc:", "    mx: [mx1]\n    pop3_starttls: true\n    dmarc:")
SMIME_TENANT = VALID.replace("      policy: none\n", "      policy: none\n    smime: {sign: always}\n")
KEEP = VALID + "postfix: {strip_internal_headers: false}\n"
NO_STS = VALID + "outbound_tls: {mta_sts: false}\n"
DMARC_REPORTS = VALID + ("dmarc_reports: {enabled: true, sender: postmaster@one.example, org_name: Example Org, "
                         "time: '04:15'}\n")
LMTP = "lmtp:unix:private/dovecot-lmtp"
MIRROR = VALID + "clamav: {mirror: https://clamav.example.org/db}\n"
LISTS = VALID.replace("    dmarc:\n      policy: none\n", "    dmarc:\n      policy: none\n    deny: {senders: ['@bad.example', "
                      "'Eve@x.example'], ips: [203.0.113.7/24]}\n    allow: {senders: ['@partner.example'], ips: [198.51.100.0/24]}\n")
MACROS_OK = VALID + "clamav: {office_macros: accept}\n"
OIDC = VALID.replace("roles: [smime]", "roles: [smime, idp]").replace(
    "    tenant: second\n", "    tenant: second\n    password_login: false\n") + "oidc: {enabled: true}\n"

# (case, inventory text, host, file, lines it must have, lines it must not have)
TABLE = [
    ("directory users: looked up, then bound as", LAB, "mail", "/etc/dovecot/mailstack/ldap-campus.test.conf.ext",
     ["uris = ldaps://ext.lab.test", "auth_bind = yes", "tls_require_cert = hard",
      "pass_filter = (&(objectClass=inetOrgPerson)(mail=%Lu)(|(mail=*@campus.test)))",
      "user_attrs = =uid=vmail, =gid=vmail, =home=/var/vmail/%Ld/%Ln, =quota_rule=*:storage=2G",
      "iterate_filter = (&(objectClass=inetOrgPerson)(mail=*)(|(mail=*@campus.test)))"], ["userPassword"]),
    ("directory users: only their domains, then the service gate", LAB, "mail",
     "/etc/dovecot/mailstack/ldap-logins.conf",
     ["  username_filter = *@campus.test", "  skip = unauthenticated", "  result_failure = return-fail",
      "  args = username_format=%Ld /etc/dovecot/mailstack/ldap-domains-%s%{if;%{lport};eq;110;-starttls;}"], []),
    ("directory users: the domain lets them in", LAB, "mail", "/etc/dovecot/mailstack/ldap-domains-imap",
     ["campus.test:::::::nopassword"], ["example.test"]),
    ("directory users: Dovecot asks the directory after the inventory", LAB, "mail", "/etc/dovecot/dovecot.conf",
     ["!include_try /etc/dovecot/mailstack/ldap-logins.conf"], []),
    ("directory users: Postfix recipients", LAB, "mail", "/etc/postfix/main.cf",
     ["virtual_mailbox_maps = texthash:/etc/postfix/mailstack/mailboxes, "
      "proxy:ldap:/etc/postfix/mailstack/ldap-mailboxes.cf",
      "smtpd_sender_login_maps = texthash:/etc/postfix/mailstack/senders, "
      "proxy:ldap:/etc/postfix/mailstack/ldap-senders.cf"], []),
    ("directory users: a sender's one login", LAB, "mail", "/etc/postfix/mailstack/ldap-senders.cf",
     ["server_host = ldaps://ext.lab.test", "domain = campus.test", "tls_require_cert = yes",
      "query_filter = (&(objectClass=inetOrgPerson)(mail=%s)(|(mail=*@campus.test)))", "result_attribute = mail", "bind = yes"], []),
    ("no directory: Postfix asks none", VALID, "mx1", "/etc/postfix/main.cf",
     ["virtual_mailbox_maps = texthash:/etc/postfix/mailstack/mailboxes"], ["proxy:ldap"]),
    ("the lab directory: no hash is ever read", LAB, "ext", "/etc/ldap/slapd.conf",
     ["access to attrs=userPassword", "  by anonymous auth", "  by * none", "disallow bind_anon", "require authc",
      'suffix "dc=campus,dc=test"', '  by dn.exact="cn=mailstack,dc=campus,dc=test" read'], []),
    ("mailbox alerts from the inventory", LAB, "mail", "/etc/prometheus/mailstack-rules.yml",
     ["        expr: mailstack_mailbox_bytes > 10737418240", "        expr: mailstack_mailbox_messages > 50",
      "        expr: delta(mailstack_mailbox_messages[1h]) > 10000"], []),
    ("Dovecot counts logins and deliveries", VALID, "mx1", "/etc/dovecot/dovecot.conf",
     ["  filter = event=auth_request_finished AND success=yes", "  filter = event=mail_delivery_finished"], []),
    ("no token logins by default", VALID, "mx1", "/etc/dovecot/dovecot.conf", ["auth_mechanisms = plain login"],
     ["auth_mechanisms = plain login oauthbearer xoauth2"]),
    ("token logins offered", OIDC, "mx1", "/etc/dovecot/dovecot.conf",
     ["auth_mechanisms = plain login oauthbearer xoauth2", "!include_try /etc/dovecot/mailstack/token-passdb.conf"], []),
    ("tokens-only domain: no password", OIDC, "mx1", "/etc/dovecot/mailstack/passdb-imap",
     ["ann@one.example:{SHA512-CRYPT}$6$abcdefgh$0123456789abcdef::::::"], ["ben@two.example"]),
    ("tokens-only domain: its users by token", OIDC, "mx1", "/etc/dovecot/mailstack/tokens-imap",
     ["ann@one.example:::::::nopassword", "ben@two.example:::::::nopassword"], []),
    ("a token is checked at the IdP", OIDC, "mx1", "/etc/dovecot/mailstack/oauth2.conf.ext",
     ["introspection_mode = post", "active_attribute = active", "active_value = true", "scope = mail",
      "username_attribute = username"], []),
    ("the token user must be allowed", OIDC, "mx1", "/etc/dovecot/mailstack/token-passdb.conf",
     ["  result_success = continue-ok", "  skip = unauthenticated", "  result_failure = return-fail"], []),
    ("the IdP speaks TLS only", OIDC, "other", "/etc/glewlwyd/glewlwyd.conf",
     ["use_secure_connection=true", 'external_url="https://other.t.example:4593"'], ["use_secure_connection=false"]),
    ("pop3 per domain: STARTTLS users", POP3_MIX, "mx1", "/etc/dovecot/mailstack/passdb-pop3-starttls",
     ["ann@one.example:{SHA512-CRYPT}$6$abcdefgh$0123456789abcdef::::::"], ["ben@two.example"]),
    ("pop3 per domain: 995 users", POP3_MIX, "mx1", "/etc/dovecot/mailstack/passdb-pop3",
     ["ann@one.example:{SHA512-CRYPT}$6$abcdefgh$0123456789abcdef::::::"], []),
    ("pop3 per domain: 110 listens", POP3_MIX, "mx1", "/etc/dovecot/dovecot.conf", ["    port = 110"], []),
    ("pop3 per domain: passdb by port", POP3_MIX, "mx1", "/etc/dovecot/dovecot.conf",
     ["  args = scheme=SHA512-CRYPT username_format=%Lu /etc/dovecot/mailstack/passdb-%s"
      "%{if;%{lport};eq;110;-starttls;}"], []),
    ("no pop3 STARTTLS: 110 closed", VALID, "mx1", "/etc/dovecot/dovecot.conf", ["    port = 0"], ["    port = 110"]),
    ("no pop3 STARTTLS: nobody on 110", VALID, "mx1", "/etc/dovecot/mailstack/passdb-pop3-starttls", [],
     ["ann@one.example", "ben@two.example"]),
    ("milter on this host", VALID, "mx1", "/etc/postfix/main.cf",
     ["smtpd_milters = inet:127.0.0.1:11332", "milter_default_action = tempfail"], []),
    ("production DNSSEC probe", VALID, "mx1", "/etc/postfix/main.cf", ["dnssec_probe = ns:."], []),
    ("lab: no probe of the refused root", LAB, "mail", "/etc/postfix/main.cf", ["dnssec_probe = "], ["ns:."]),
    ("local delivery", VALID, "mx1", "/etc/postfix/mailstack/transport",
     [f"one.example {LMTP}", f"two.example {LMTP}"], []),
    ("postmaster@ every domain, unless the inventory has it", LAB, "mail", "/etc/postfix/mailstack/aliases",
     ["postmaster@tenant-b.test postmaster@example.test", "postmaster@example.test alice@example.test"],
     ["postmaster@ext.test"]),
    ("no S/MIME tenant: no FILTER", VALID, "mx1", "/etc/postfix/mailstack/header-checks", [], ["FILTER"]),
    ("S/MIME content to the gateway", SMIME_TENANT, "mx1", "/etc/postfix/mailstack/header-checks",
     ["/^Content-Type[ \\t]*:.*pkcs7-mime/ FILTER smime:[other.t.example]:10025"], []),
    ("plain mail for an S/MIME tenant: rspamd writes the verdict", SMIME_TENANT, "mx1", "/etc/rspamd/rspamd.local.lua",
     ['  ["one.example"] = true,'], ['  ["two.example"] = true,']),
    ("signed mail for an S/MIME tenant: rspamd asks the verifier on loopback", SMIME_TENANT, "mx1",
     "/etc/rspamd/mailstack.d/smime_verify.lua", ['local URL = "http://127.0.0.1:10030/verify"'], []),
    ("the verifier: loopback, the system trust store, the gateway's limits", SMIME_TENANT, "mx1",
     "/etc/mailstack-smime-verify/config.json",
     ['  "listen": "127.0.0.1",', '  "port": 10030,', '  "trust": "/etc/ssl/certs"', '  "max_mime_depth": 16,'], []),
    ("gateway listens for its MTAs only", SMIME_TENANT, "other", "/etc/mailstack-smime/config.json",
     ['  "listen": "192.0.2.2",', '    "192.0.2.1"', '  "port": 10025,', '  "submission_port": 10028,'], []),
    ("internal headers stripped (default)", VALID, "mx1", "/etc/postfix/mailstack/submission-header-checks",
     ["/^Received:/ IGNORE", "/^X-Originating-IP:/ IGNORE"], []),
    ("internal headers kept", KEEP, "mx1", "/etc/postfix/mailstack/submission-header-checks", [],
     ["/^Received:/ IGNORE"]),
    ("header From bound to logins", VALID, "mx1", "/etc/rspamd/maps.d/senders.map",
     ["ann@one.example ann@one.example", "ben@two.example ben@two.example",
      "postmaster@one.example ann@one.example"], []),
    ("rspamd milter on loopback", VALID, "mx1", "/etc/rspamd/local.d/worker-proxy.inc",
     ['bind_socket = "127.0.0.1:11332";'], []),
    ("outbound: DANE first, then MTA-STS", VALID, "mx1", "/etc/postfix/main.cf",
     ["smtp_tls_security_level = dane", "smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8462:dane, "
      "socketmap:inet:127.0.0.1:8461:postfix"], []),
    ("outbound: MTA-STS off, DANE still first", NO_STS, "mx1", "/etc/postfix/main.cf",
     ["smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8462:dane"], ["8461"]),
    ("dmarc reports: rspamd's settings", DMARC_REPORTS, "mx1", "/etc/rspamd/local.d/dmarc.conf",
     ['  email = "postmaster@one.example";', '  domain = "one.example";', '  org_name = "Example Org";',
      "  smtp_port = 10587;"], []),
    ("dmarc reports: daily at the set time", DMARC_REPORTS, "mx1", "/etc/systemd/system/mailstack-dmarc-reports.timer",
     ["OnCalendar=*-*-* 04:15:00 UTC"], []),
    ("dmarc reports: Postfix takes them as the platform's own, on loopback", DMARC_REPORTS, "mx1",
     "/etc/postfix/master.cf", ["127.0.0.1:10587 inet n - n - - smtpd", "  -o milter_macro_daemon_name=ORIGINATING"],
     []),
    ("lab resolver isolated", LAB, "mail", "/etc/unbound/unbound.conf.d/mailstack.conf",
     ['    local-zone: "." refuse', "    stub-addr: 10.77.0.20", '    module-config: "validator iterator"'],
     ["trust-anchor-file"]),
    ("production resolver validates", VALID, "mx1", "/etc/unbound/unbound.conf.d/mailstack.conf",
     ['    module-config: "validator iterator"', '    trust-anchor-file: "/usr/share/dns/root.key"'], ["refuse"]),
    ("clamav: rspamd scans whole messages", VALID, "mx1", "/etc/rspamd/local.d/antivirus.conf",
     ['  servers = "/var/run/clamav/clamd.ctl";', "  scan_mime_parts = false;"], ["  action ="]),
    ("clamav: a finding is malware for the recipients' policy", VALID, "mx1", "/etc/rspamd/mailstack.d/clamav.lua",
     ['table.insert(mailstack.malware, { symbol = "CLAM_VIRUS", reply = "virus found: %s" })'], []),
    ("clamav: failure is a 4xx", VALID, "mx1", "/etc/rspamd/local.d/force_actions.conf",
     ['    action = "soft reject";', '    expression = "CLAM_VIRUS_FAIL & !CLAM_VIRUS_UNSCANNED";'], []),
    ("clamav: what it cannot scan whole is a finding", VALID, "mx1", "/etc/clamav/clamd.conf",
     ["AlertExceedsMax true", "AlertEncrypted true"], []),
    ("clamav: macros accepted on request", MACROS_OK, "mx1", "/etc/clamav/clamd.conf", ["AlertOLE2Macros false"],
     ["AlertOLE2Macros true"]),
    ("clamav: the biggest message fits", VALID, "mx1", "/etc/clamav/clamd.conf",
     ["AlertOLE2Macros true", "StreamMaxLength 53477376", "LocalSocket /var/run/clamav/clamd.ctl"], ["TCPSocket"]),
    ("clamav: public signatures", VALID, "mx1", "/etc/clamav/freshclam.conf", ["NotifyClamd /etc/clamav/clamd.conf"],
     ["PrivateMirror"]),
    ("clamav: the operator's mirror", MIRROR, "mx1", "/etc/clamav/freshclam.conf",
     ["PrivateMirror https://clamav.example.org/db"], []),
    ("clamav: a lab's test signature", LAB, "mail", "/var/lib/clamav/mailstack-lab.ndb",
     [f"Mailstack.Lab.EICAR:0:*:{EICAR.encode().hex()}"], []),
    ("peekaboo: rspamd asks it", LAB, "mail", "/etc/rspamd/mailstack.d/peekaboo.lua",
     ['local URL = "http://127.0.0.1:8100"', '  ["tenant-b.test"] = 0,', '  ["example.test"] = 2,',
      'local ON_NO_VERDICT = "reject"   -- reject | accept', "local PENDING_TIMEOUT = 1800  -- seconds a sample may stay "
      "under analysis"], ['["ext.test"]']),
    ("peekaboo: asked only after ClamAV", LAB, "mail", "/etc/rspamd/mailstack.d/peekaboo.lua",
     ['rspamd_config:register_dependency("MAILSTACK_PEEKABOO", "CLAM_VIRUS_UNSCANNED")'], []),
    ("peekaboo: without ClamAV no dependency", LAB + "  enabled: false\n", "mail",
     "/etc/rspamd/mailstack.d/peekaboo.lua", [], ["register_dependency"]),
    ("peekaboo: sandbox-free ruleset", LAB, "mail", "/etc/mailstack-peekaboo/ruleset.conf",
     ["rule.4 : office_macro", "rule.6 : final_rule", "whitelist.1 : text/plain",
      "expression.1 : sample.file_extension in { 'exe', 'scr', 'com', 'pif', 'bat', 'cmd', 'vbs', 'vbe', 'js', 'jse', "
      "'wsf', 'wsh', 'hta', 'lnk', 'ps1', 'jar', 'msi', 'iso', 'img' } -> bad"], ["cuckoo"]),
    ("peekaboo: loopback only", LAB, "mail", "/etc/mailstack-peekaboo/peekaboo.conf",
     ["host : 127.0.0.1", "port : 8100", "url : sqlite:////var/lib/mailstack-peekaboo/peekaboo.db"], []),
    ("peekaboo: hosts install from wheels only", LAB, "mail", "/opt/mailstack-peekaboo/wheels/requirements.txt",
     ["PeekabooAV==2.1", "pyparsing==2.4.7", "aiosqlite==0.22.1"], []),
    ("rspamd loads what components add", VALID, "mx1", "/etc/rspamd/rspamd.local.lua",
     ['for _, path in ipairs(rspamd_util.glob("/etc/rspamd/mailstack.d/*.lua") or {}) do'], []),
    ("lists: deny per recipient domain", LISTS, "mx1", "/etc/postfix/mailstack/tenant-deny",
     ["one.example mailstack_deny_1"], ["two.example"]),
    ("lists: the domain's refused senders", LISTS, "mx1", "/etc/postfix/mailstack/mailstack_deny_1-senders",
     ["bad.example REJECT 5.7.1 refused by the policy of the recipient's domain",
      "eve@x.example REJECT 5.7.1 refused by the policy of the recipient's domain"], []),
    ("lists: networks normalised for cidr", LISTS, "mx1", "/etc/postfix/mailstack/mailstack_deny_1-ips",
     ["203.0.113.0/24 REJECT 5.7.1 refused by the policy of the recipient's domain"], []),
    ("lists: classes checked at RCPT", LISTS, "mx1", "/etc/postfix/main.cf",
     ["smtpd_restriction_classes = mailstack_deny_1", "mailstack_deny_1 = check_client_access "
      "cidr:/etc/postfix/mailstack/mailstack_deny_1-ips, check_sender_access "
      "texthash:/etc/postfix/mailstack/mailstack_deny_1-senders",
      "    check_recipient_access texthash:/etc/postfix/mailstack/tenant-deny"], []),
    ("lists: refused attachment types", LAB, "mail", "/etc/rspamd/rspamd.local.lua",
     ['  ["example.test"] = { ["zip"] = true, },'], ['["tenant-b.test"] = { ["']),
    ("policies: per domain, a user's overrides merged", LAB, "mail", "/etc/rspamd/rspamd.local.lua",
     ['  ["legacy.test"] = { spam = "quarantine", malware = "quarantine", quarantine = "quarantine@legacy.test" },',
      '  ["frank@legacy.test"] = { spam = "junk", malware = "discard", quarantine = "quarantine@legacy.test" },',
      '  ["example.test"] = { spam = "reject", malware = "reject", quarantine = "" },'],
     ['["erin@legacy.test"]', '["ext.test"]']),
    ("policies: a quarantine mailbox keeps all in INBOX", LAB, "mail", "/etc/dovecot/mailstack/spam-to-junk.sieve",
     ['if allof (envelope :user "to" "quarantine", envelope :domain "to" "legacy.test") {'], ['"example.test"']),
    ("policies: one recipient per LMTP delivery (Delivered-To names it)", VALID, "mx1", "/etc/postfix/main.cf",
     ["lmtp_destination_recipient_limit = 1"], []),
    ("lists: allow per recipient domain", LISTS, "mx1", "/etc/rspamd/maps.d/tenant_allow.map",
     ["one.example @partner.example,198.51.100.0/24"], ["two.example"]),
    ("siem: records forwarded over TLS, queued on disk", LAB, "mail", "/etc/rsyslog.d/mailstack-siem.conf",
     ['  action(type="omfwd" target="ext.lab.test" port="6514" protocol="tcp"',
      '         StreamDriverPermittedPeers="ext.lab.test" StreamDriver.CAFile="/etc/ssl/certs/ca-certificates.crt"',
      '         TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"',
      '         queue.maxDiskSpace="1g" queue.saveOnShutdown="on"',
      'input(type="imudp" address="127.0.0.1" port="10514" ruleset="mailstack-siem")',
      '  action(type="omprog" binary="/usr/local/lib/mailstack/siem-http https://ext.lab.test:8443/records" '
      'template="mailstack-siem-json"', '         confirmMessages="on" confirmTimeout="20000" reportFailures="on"'],
     []),
    ("siem: rspamd's record names each domain's tenant", LAB, "mail", "/etc/rspamd/mailstack.d/siem.lua",
     ['  ["example.test"] = "example",', '  ["legacy.test"] = "legacy",'], ['["ext.test"]']),
    ("siem: the lab's receiver speaks TLS only", LAB, "ext", "/etc/rsyslog.d/mailstack-siem-receiver.conf",
     ['module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")'], []),
    ("firewall: the SIEM receiver for filter hosts only", LAB, "ext", "/etc/nftables.conf",
     ['    ip saddr { 10.77.0.10 } tcp dport 6514 accept comment "siem: verdict records from the filter hosts (syslog)"',
      '    ip saddr { 10.77.0.10 } tcp dport 8443 accept comment "siem: verdict records from the filter hosts (HTTPS)"'],
     []),
    ("bruteforce: bans on every login port, never the platform's hosts", LAB, "mail",
     "/etc/fail2ban/jail.d/mailstack.conf",
     ["ignoreip = 127.0.0.1/8 ::1 10.77.0.10 10.77.0.1", "maxretry = 3", "findtime = 10m", "bantime = 30s",
      "banaction = nftables-multiport", "port = 143,993,110,995,587,465,443",
      "journalmatch = _SYSTEMD_UNIT=dovecot.service", "[sshd]", "enabled = false"], ["10.77.0.20"]),
    ("bruteforce: Dovecot writes a line per failed login", VALID, "mx1", "/etc/dovecot/dovecot.conf",
     ["auth_verbose = yes"], ["auth_verbose_passwords"]),
    ("firewall: a reload replaces mailstack's table only (fail2ban's bans stay)", VALID, "mx1",
     "/etc/nftables.conf", ["table inet mailstack", "delete table inet mailstack"], ["flush ruleset"]),
    ("limits: the platform's, a domain's and a user's", LAB, "mail", "/etc/rspamd/mailstack.d/limits.lua",
     ["local DEFAULT = { messages_per_minute = 30, messages_per_hour = 300, messages_per_day = 1000, "
      "recipients_per_hour = 1000, recipients_per_day = 3000, hold_after = 2000 }",
      '  ["gina@example.test"] = { messages_per_minute = 5, hold_after = 8 },'], ['["bob@example.test"]']),
    ("limits: the hold queue and a confirmed discard are actions no score reaches", VALID, "mx1",
     "/etc/rspamd/local.d/actions.conf", ["quarantine {", "discard {", '  flags = ["no_threshold"];'], []),
    ("limits: a held account's logins are refused, before any other passdb", LAB, "mail",
     "/etc/dovecot/mailstack/held-passdb.conf", ["  driver = dict", "  deny = yes",
                                                 "  args = /etc/dovecot/mailstack/held.conf.ext"], []),
    ("limits: the hold is looked up where the limits rule writes it", LAB, "mail", "/etc/dovecot/mailstack/held.conf.ext",
     ["  key = mailstack:limits:%u:hold", "  mailstack_hold = %{dict:hold}"], []),
    ("limits: lock_password off, a held account may log in", VALID, "mx1", "/etc/dovecot/mailstack/held-passdb.conf",
     ["# Managed by mailstack: limits.lock_password is off, a held account may still log in."], ["passdb"]),
    ("monitoring: every platform host scraped, no outside one", LAB, "mail", "/etc/prometheus/prometheus.yml",
     ['      - targets: ["10.77.0.10:9100"]', '      - targets: ["10.77.0.10:9154"]', "  scrape_interval: 5s"],
     ["10.77.0.20"]),
    ("monitoring: the queue alert from the inventory's size", LAB, "mail", "/etc/prometheus/mailstack-rules.yml",
     ['        expr: sum by (instance) (postfix_showq_message_size_bytes_count{queue=~"active|incoming|deferred|'
      'maildrop"}) > 5', "        expr: mailstack_account_on_hold > 0"], []),
    ("monitoring: the disk alert leaves filesystems in memory out", LAB, "mail", "/etc/prometheus/mailstack-rules.yml",
     ['        expr: 100 * (1 - node_filesystem_avail_bytes{fstype!~"tmpfs|devtmpfs|ramfs|squashfs|overlay"} / '
      'node_filesystem_size_bytes{fstype!~"tmpfs|devtmpfs|ramfs|squashfs|overlay"}) > 85'], []),
    ("monitoring: node exporter watches this host's daemons", LAB, "mail", "/etc/default/prometheus-node-exporter",
     ['ARGS="--web.listen-address=:9100 --collector.textfile.directory=/var/lib/prometheus/node-exporter '
      '--collector.systemd --collector.systemd.unit-include=(clamav-daemon|dovecot|fail2ban|glewlwyd|mailstack-acme|mailstack-backup|'
      'mailstack-backup-check|mailstack-backup-lock|mailstack-dane-first|mailstack-dmarc-reports|mailstack-metrics|mailstack-peekaboo|mailstack-seaweedfs|mailstack-smime|mailstack-smime-verify|nftables|nginx|postfix|'
      'postfix-mta-sts-resolver|postsrsd|prometheus|prometheus-alertmanager|prometheus-node-exporter|redis-server|rspamd|rsyslog|unbound)[.]service"'], []),
    ("tls: Postfix serves each name's certificate by SNI, with the host's one key", LAB, "mail",
     "/etc/postfix/mailstack/sni",
     ["imap.sso.test /etc/mailstack/tls/key.pem /etc/mailstack/tls/sni/imap.sso.test.pem",
      "smtp.tenant-b.test /etc/mailstack/tls/key.pem /etc/mailstack/tls/sni/imap.tenant-b.test.pem"],
     ["smtp.example.test /etc/mailstack/tls/key.pem /etc/mailstack/tls/cert.pem"]),  # the host's own: the default
    ("tls: Dovecot serves each name's certificate by SNI", LAB, "mail", "/etc/dovecot/dovecot.conf",
     ['local_name "imap.sso.test smtp.sso.test webmail.sso.test autoconfig.sso.test autodiscover.sso.test '
      'imap.campus.test smtp.campus.test autoconfig.campus.test autodiscover.campus.test" {',
      "  ssl_cert = </etc/mailstack/tls/sni/imap.sso.test.pem"], []),
    ("tls: nginx's sites and webmail each serve the certificate of their names", LAB, "mail",
     "/etc/nginx/sites-enabled/mailstack-webmail",
     ["    server_name webmail.tenant-b.test;", "    ssl_certificate /etc/mailstack/tls/sni/imap.tenant-b.test.pem;",
      "    server_name webmail.sso.test;", "    ssl_certificate /etc/mailstack/tls/sni/imap.sso.test.pem;"], []),
    ("tls: the ACME host is asked for each certificate by a line of names", LAB, "mail", "/etc/mailstack/tls/certificates",
     ["/etc/mailstack/tls/sni/imap.sso.test.pem imap.sso.test smtp.sso.test webmail.sso.test autoconfig.sso.test "
      "autodiscover.sso.test imap.campus.test smtp.campus.test autoconfig.campus.test autodiscover.campus.test"], []),
    ("monitoring: the metrics watch every certificate of the host and the S/MIME tenants' too", LAB, "mail",
     "/usr/local/sbin/mailstack-metrics",
     ['CERTIFICATES = ["/etc/mailstack/tls/cert.pem", "/etc/mailstack/tls/sni/imap.tenant-b.test.pem", '
      '"/etc/mailstack/tls/sni/imap.sso.test.pem", "/etc/mailstack-smime/tenants/example.test.pem"]'
      '  # the host\'s own first: it must be there'], []),
    ("monitoring: alerts to webhooks only", LAB, "mail", "/etc/prometheus/alertmanager.yml",
     ['      - url: "https://ext.lab.test:8444/alerts"', "  group_wait: 5s"], ["email_configs"]),
    ("monitoring: Prometheus and Alertmanager on loopback", LAB, "mail", "/etc/default/prometheus-alertmanager",
     ['ARGS="--web.listen-address=127.0.0.1:9093 --cluster.listen-address="'], []),
    ("monitoring: exporters for the monitoring hosts only", LAB, "ext", "/etc/nftables.conf",
     ['    ip saddr { 10.77.0.10 } tcp dport 9100 accept comment "monitoring: node exporter"',
      '    ip saddr { 10.77.0.10 } tcp dport 8444 accept comment "pager: alerts from the monitoring hosts"'], []),
    ("firewall: public ports by role", VALID, "mx1", "/etc/nftables.conf",
     ['    tcp dport 25 accept comment "mx: SMTP from the Internet"'], ["tcp dport 110"]),
    ("firewall: gateway only for MTAs", VALID, "other", "/etc/nftables.conf",
     ['    ip saddr { 192.0.2.1 } tcp dport 10025 accept comment "smime: the S/MIME gateway for Postfix"'],
     ["tcp dport 25 "]),
]


@pytest.fixture(scope="module", autouse=True)
def secrets_home(tmp_path_factory):
    """Keys and certificates the lab CA issues while rendering go to a scratch home."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    yield
    mp.undo()


def services(text: str, host: str):
    plan = plans(check_text(text, "inv.yml"))[host]
    return [s for c in plan.components for s in configured(c, plan)]


def test_signed_mail_is_checked_on_every_filter_host_and_only_with_s_mime():
    """smime_verify runs where rspamd runs, once a domain has S/MIME, and nowhere else."""
    assert "/etc/rspamd/mailstack.d/smime_verify.lua" in rendered(SMIME_TENANT, "mx1")
    assert not any("smime" in path for path in rendered(VALID, "mx1"))
    multi = plans(check_text((ROOT / "inventories" / "lab-multi.yml").read_text(), "lab-multi.yml"))
    assert [h for h, plan in multi.items() if any(c.name == "smime_verify" for c in plan.components)] == ["filter1"]


def rendered(text: str, host: str) -> dict[str, File]:
    return {f.path: f for s in services(text, host) for f in s.files}


@pytest.mark.parametrize("case,text,host,path,present,absent", TABLE, ids=[row[0] for row in TABLE])
def test_rendered_file(case, text, host, path, present, absent):
    lines = rendered(text, host)[path].lines
    for line in present:
        assert line in lines, f"{case}: {line!r} missing from {path}"
    for fragment in absent:
        assert not any(fragment in line for line in lines), f"{case}: {fragment!r} found in {path}"


def test_limits_can_be_turned_off():
    plan = plans(check_text(VALID + "limits: {enabled: false}\n", "inv.yml"))["mx1"]
    [rspamd] = [s for c in plan.components for s in configured(c, plan) if s.unit == "rspamd"]
    assert "/etc/rspamd/mailstack.d/limits.lua" in rspamd.absent


def test_the_held_passdb_comes_before_every_other_and_its_password_is_a_secret():
    conf = rendered(LAB, "mail")["/etc/dovecot/dovecot.conf"].lines
    assert conf.index("!include_try /etc/dovecot/mailstack/held-passdb.conf") < conf.index("passdb {")
    lookup = rendered(LAB, "mail")["/etc/dovecot/mailstack/held.conf.ext"]
    assert lookup.secret and lookup.mode == "0640" and lookup.group == "dovecot"
    assert any(line.startswith("uri = redis:host=127.0.0.1:port=6379:password=") for line in lookup.lines)
    [dovecot] = [s for s in services(VALID + "limits: {enabled: false}\n", "mx1") if s.unit == "dovecot"]
    assert "/etc/dovecot/mailstack/held-passdb.conf" in dovecot.absent


def test_without_receivers_no_record_is_written():
    """No siem.syslog: rspamd gets no SIEM rule (a left-over one is removed) and no rsyslog runs for it."""
    plan = plans(check_text(VALID, "inv.yml"))["mx1"]
    [rspamd] = [s for c in plan.components for s in configured(c, plan) if s.unit == "rspamd"]
    assert "/etc/rspamd/mailstack.d/siem.lua" in rspamd.absent
    assert "/etc/rsyslog.d/mailstack-siem.conf" not in rendered(VALID, "mx1")


def test_only_mail_an_alias_forwards_off_the_platform_is_arc_sealed():
    """Issue 24: a seal (two RSA signatures) is made only where a receiver reads it: for the
    aliases that forward outside, also through other aliases (a loop ends), in any case."""
    text = VALID.replace("aliases:\n", """aliases:
  - {address: out@one.example, to: [someone@elsewhere.example]}
  - {address: via@two.example, to: [ben@two.example, out@one.example]}
  - {address: loop-a@one.example, to: [loop-b@one.example]}
  - {address: loop-b@one.example, to: [loop-a@one.example, ann@one.example]}
""")
    files = rendered(text, "mx1")
    assert "enabled = true;" in files["/etc/rspamd/local.d/arc.conf"].lines
    settings = files["/etc/rspamd/local.d/settings.conf"].lines
    assert '  rcpt = "/^(?:out@one\\\\.example|via@two\\\\.example)$/i";' in settings, settings
    assert "enabled = false;" in rendered(VALID, "mx1")["/etc/rspamd/local.d/arc.conf"].lines  # no forward


def test_secret_files_are_private_and_marked_secret():
    files = rendered(VALID, "mx1")
    for path in ("/etc/dovecot/mailstack/passdb-imap", "/etc/rspamd/local.d/redis.conf",
                 "/etc/mailstack/tls/key.pem", "/etc/redis/mailstack.conf"):
        assert files[path].secret and not int(files[path].mode, 8) & 0o007, path


def test_dovecot_introspects_at_the_idp_with_the_client_secret_never_in_clear_elsewhere():
    mx1 = rendered(OIDC, "mx1")
    url = next(line for line in mx1["/etc/dovecot/mailstack/oauth2.conf.ext"].lines
               if line.startswith("introspection_url = "))
    assert url.startswith("introspection_url = https://mailstack:")
    assert url.endswith("@other.t.example:4593/api/oidc/introspect")
    assert mx1["/etc/dovecot/mailstack/oauth2.conf.ext"].secret
    state = rendered(OIDC, "other")["/etc/mailstack/idp.json"]
    assert state.secret and state.mode == "0600"
    users = {u["username"]: u for u in json.loads(state.content)["users"]}
    assert set(users) == {"ann@one.example", "ben@two.example"} and all(len(u["password"]) >= 24 for u in users.values())


def test_no_token_logins_leave_no_token_files():
    absent = {path for s in services(VALID, "mx1") for path in s.absent}
    assert {"/etc/dovecot/mailstack/token-passdb.conf", "/etc/dovecot/mailstack/tokens-imap"} <= absent


def test_who_may_log_in_changes_without_a_dovecot_restart():
    """Users are in files Dovecot reads again by itself: a new user restarts nothing (open
    sessions stay); the tool that ends the sessions of changed or removed users runs instead."""
    dovecot = services(OIDC, "mx1")
    [logins] = [s for s in dovecot if "/etc/dovecot/mailstack/passdb-imap" in {f.path for f in s.files}]
    assert logins.unit is None and logins.on_change.startswith("/usr/local/sbin/mailstack-logins-applied ")
    assert {"/etc/dovecot/mailstack/userdb", "/etc/dovecot/mailstack/tokens-imap"} <= {f.path for f in logins.files}
    # the copies it compares with next time come after it, the same texts, root only
    kept = dovecot[dovecot.index(logins) + 1]
    assert {f.path.rsplit("/", 1)[1]: f.content for f in kept.files} == {
        f.path.rsplit("/", 1)[1]: f.content for f in logins.files if "/userdb" not in f.path}
    assert all(f.mode == "0600" and f.user == "root" and f.secret for f in kept.files)


def test_an_operators_directory_is_read_with_its_password_and_ca(tmp_path):
    secret, ca = tmp_path / "bind.secret", tmp_path / "directory-ca.pem"
    secret.write_text("operator-bind-pw\n")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    text = VALID.replace("    tenant: second\n", "    tenant: second\n    user_source: ldap\n").replace(
        "  - address: ben@two.example\n    password: \"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$abc$def\"\n", "") + (
        f"ldap: {{uris: ['ldaps://dc1.example.org', 'ldaps://dc2.example.org:3269'], base_dn: 'dc=example,dc=org', "
        f"bind_dn: 'cn=mail,dc=example,dc=org', bind_password_file: '{secret}', ca_file: '{ca}', "
        f"user_object_class: user}}\n")
    files = rendered(text, "mx1")
    dovecot, postfix = files["/etc/dovecot/mailstack/ldap-two.example.conf.ext"], files["/etc/postfix/mailstack/ldap-mailboxes.cf"]
    assert {"dnpass = operator-bind-pw", "uris = ldaps://dc1.example.org ldaps://dc2.example.org:3269",
            "tls_ca_cert_file = /etc/mailstack/ldap-ca.pem",
            "user_filter = (&(objectClass=user)(mail=%Lu)(|(mail=*@two.example)))"} <= set(dovecot.lines)
    assert {"bind_pw = operator-bind-pw", "domain = two.example"} <= set(postfix.lines)
    for secret_file in (dovecot, postfix, files["/etc/postfix/mailstack/ldap-senders.cf"]):
        assert secret_file.secret and not int(secret_file.mode, 8) & 0o007
    assert files["/etc/mailstack/ldap-ca.pem"].content == ca.read_bytes()
    assert not any(path.startswith("/etc/ldap") for host in ("mx1", "other") for path in rendered(text, host))
    [plain] = [s for s in services(VALID, "mx1") if s.unit == "dovecot"]
    assert "/etc/dovecot/mailstack/ldap-logins.conf" in plain.absent  # a directory turned off leaves no lookup
    # with the directory on: Postfix asks it after its own files; a domain not in it has no lookup file left
    main = files["/etc/postfix/main.cf"].lines
    assert "virtual_mailbox_maps = texthash:/etc/postfix/mailstack/mailboxes, proxy:ldap:/etc/postfix/mailstack/" \
           "ldap-mailboxes.cf" in main
    [dovecot] = [s for s in services(text, "mx1") if s.unit == "dovecot"]
    assert "/etc/dovecot/mailstack/ldap-one.example.conf.ext" in dovecot.absent
    assert "/etc/dovecot/mailstack/ldap-two.example.conf.ext" not in dovecot.absent


def test_rendering_is_deterministic():
    first, second = rendered(LAB, "mail"), rendered(LAB, "mail")
    assert {p: f.content for p, f in first.items()} == {p: f.content for p, f in second.items()}


class FakeHost:
    """What install_files sees of a host: one fact answer for all its files."""

    name = "fake"

    def __init__(self, states):
        self.states, self.noops, self.asked = states, [], 0

    def get_fact(self, fact, **kwargs):
        self.asked += 1
        return self.states

    def noop(self, text):
        self.noops.append(text)


def state(file: File) -> str:
    return f"{file.user} {file.group} {file.mode[-3:]} {hashlib.sha256(file.content).hexdigest()}"


@pytest.mark.parametrize("change,uploads", [("none", 0), ("content", 1), ("mode", 1), ("missing", 1)])
def test_install_files_changes_only_what_differs(monkeypatch, change, uploads):
    files = (File.text("/etc/a", "one"), File.text("/etc/b", "two", mode="0640", group="dovecot", secret=True))
    states = [state(f) for f in files]
    states[1] = {"none": states[1], "content": state(File.text("/etc/b", "old", mode="0640", group="dovecot")),
                 "mode": state(File.text("/etc/b", "two", mode="0644", group="dovecot")),
                 "missing": "missing"}[change]
    fake = FakeHost(states)
    monkeypatch.setattr(ops, "host", fake)
    commands = list(ops.install_files._inner(files=files))
    moved = [step for c in commands if isinstance(c, str) for step in c.split(" && chown ")[1:]]
    assert len(moved) == uploads
    if uploads:
        assert moved[0].startswith("root:dovecot") and "chmod 0640" in moved[0] and moved[0].endswith("/etc/b")
        upload, = [c for c in commands if isinstance(c, FileUploadCommand)]  # every changed file in one
        with tarfile.open(fileobj=upload.src) as bundle:
            assert [bundle.extractfile(m).read() for m in bundle] == [files[1].content]
    else:
        assert fake.noops == ["2 files are current"]


def test_thousands_of_changed_files_go_in_commands_a_shell_takes(monkeypatch):
    """A hosting provider's first deploy writes thousands of files in one operation: one upload,
    and the commands that place them each stay under what SSH and `sh -c` take."""
    files = tuple(File.text(f"/etc/rspamd/dkim/domain-{n:05}.example.key", "k", mode="0640", group="_rspamd")
                  for n in range(3000))
    monkeypatch.setattr(ops, "host", FakeHost(["missing"] * len(files)))
    commands = list(ops.install_files._inner(files=files))
    placing = [c for c in commands if isinstance(c, str) and "mv -f" in c]
    assert len([c for c in commands if isinstance(c, FileUploadCommand)]) == 1
    assert len(placing) > 1 and all(len(c) <= ops.COMMAND_LIMIT for c in placing)
    assert sum(c.count("mv -f") for c in placing) == len(files)


def test_files_of_a_component_turned_off_are_removed(monkeypatch):
    current = File.text("/etc/a", "one")
    monkeypatch.setattr(ops, "host", FakeHost([state(current), "root root 644 abc", "missing"]))
    commands = list(ops.install_files._inner(files=(current,), absent=("/etc/rspamd/local.d/old.conf", "/etc/gone")))
    assert commands == ["rm -f /etc/rspamd/local.d/old.conf"]


def test_a_settled_host_is_not_asked_again_and_a_change_unsettles_it(monkeypatch):
    """The no-op deploy decides from the stock taken at its start (issue 24: round trips); files
    it writes and units it starts are known as such; once something else changed on the host (a
    package installed), every later operation asks the host itself."""
    current, old = File.text("/etc/a", "one"), File.text("/etc/b", "two")
    fake = FakeHost(["root root 644 abc"])
    monkeypatch.setattr(ops, "host", fake)
    monkeypatch.setitem(ops.STOCK, "fake", ops.Stock(packages=set(), files={"/etc/a": state(current),
                                                                            "/etc/b": state(old)},
                                                     units={"dovecot.service": "active enabled",
                                                            "rspamd.service": "inactive disabled"}))
    assert list(ops.install_files._inner(files=(current,))) == [] and fake.asked == 0
    assert list(ops.unit_state._inner(unit="dovecot")) == [] and fake.asked == 0
    newer = File.text("/etc/b", "three")
    assert list(ops.install_files._inner(files=(newer,))) and ops.STOCK["fake"].settled  # written, and known so
    assert list(ops.install_files._inner(files=(newer,))) == [] and fake.asked == 0
    assert list(ops.unit_state._inner(unit="rspamd")) == ["systemctl start rspamd.service",
                                                          f"{ops.ENABLE} rspamd.service"]
    assert list(ops.unit_state._inner(unit="rspamd")) == [] and ops.STOCK["fake"].settled  # known as started
    assert list(ops.restart._inner(unit="dovecot")) == ["systemctl restart dovecot.service"]
    assert list(ops.unit_state._inner(unit="dovecot")) == [] and fake.asked == 0
    ops.unsettle()  # what a package install does
    list(ops.install_files._inner(files=(current,)))
    assert fake.asked == 1  # asked the host again, not the stock


def test_a_unit_this_deploy_started_is_restarted_not_reloaded(monkeypatch):
    """A reload's signal can end a daemon that has just started and not yet set its handler
    (rspamd, started early for its new group, was gone after the Vagrant lab's deploy): a unit
    this run started or restarted is restarted when its files change; any other is reloaded."""
    monkeypatch.setattr(ops, "host", FakeHost([]))
    monkeypatch.setattr(ops, "STARTED", {})
    monkeypatch.setitem(ops.STOCK, "fake", ops.Stock(packages=set(), files={}, units={
        "rspamd.service": "inactive enabled", "postfix.service": "active enabled", "nginx.service": "active enabled"}))
    assert list(ops.unit_state._inner(unit="rspamd")) == ["systemctl start rspamd.service"]
    assert list(ops.restart._inner(unit="rspamd", reload=True)) == ["systemctl restart rspamd.service"]
    assert list(ops.restart._inner(unit="postfix", reload=True)) == ["systemctl reload postfix.service"]
    list(ops.restart._inner(unit="nginx"))
    assert list(ops.restart._inner(unit="nginx", reload=True)) == ["systemctl restart nginx.service"]


def test_a_run_that_first_detects_changes_still_makes_them(monkeypatch):
    """pyinfra without -y (the README's production deploy) runs each operation up to its first
    command to learn whether it would change anything, then runs it again: the stock must not
    take a file as written or a unit as started before the operation really ran."""
    monkeypatch.setattr(ops, "host", FakeHost([]))
    monkeypatch.setattr(ops, "STAGED", set())
    monkeypatch.setitem(ops.STOCK, "fake", ops.Stock(packages=set(), files={"/etc/a": state(File.text("/etc/a", "1"))},
                                                     units={"x.service": "inactive disabled"}))
    for run in (lambda: ops.install_files._inner(files=(File.text("/etc/a", "2"),)),
                lambda: ops.unit_state._inner(unit="x")):
        detecting = run()
        next(detecting)
        detecting.close()
        assert any("mv -f" in c or "systemctl start" in c for c in list(run()) if isinstance(c, str))
    assert list(ops.unit_state._inner(unit="x")) == []  # after the real run: known


def test_a_hosts_questions_go_in_one_command_and_its_probes_skip_pyinfras_own():
    """Issue 24: a no-op deploy asks each host twice, not once per fact. The combined command
    runs here in sh; a failing part answers None, the others still answer."""
    facts = ((ops.Probes, (("tests", ("true", "false", "[ -e /nonexistent ]")),)),
             (ops.Accounts, (("names", ("root",)),)), (ops.FileStates, (("paths", ("/nonexistent",)),)))
    command = ops.Together().command(facts=facts) + f"; false; echo {ops.BOUNDARY}$?"
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout.splitlines()
    probes, accounts, files, failed = ops.Together().process(output)
    assert ops.Probes().process(probes) == ["yes", "no", "no"]
    assert ops.Accounts().process(accounts)["passwd"]["root"][0] == "root"
    assert ops.FileStates().process(files) == ["missing"] and failed is None


def test_the_stock_of_thousands_of_files_is_one_command_a_shell_takes():
    """The paths of a hosting provider's files are in the stock's command once (it listed them
    four times), and thousands of them are asked in parts (4,316 paths for 1,000 domains made a
    command SSH refused)."""
    paths = tuple(f"/etc/rspamd/dkim/domain-{n:05}.example.key" for n in range(2000))
    command = ops.FileStates().command(paths=paths)
    assert len(command) < sum(len(p) + 4 for p in paths) + 2000 and command.count(paths[0]) == 1
    many = tuple(f"/etc/dovecot/mailstack/domains/d{n}.scale.test/passwd" for n in range(4000))
    questions = ops._file_questions(many, big=many[:3])
    assert len(questions) > 1 and [p for q in questions for p in q["paths"]] == list(many)
    assert all(len(ops.FileStates().command(**q)) < 2 * ops.COMMAND_LIMIT for q in questions)
    assert questions[0]["stamped"] == many[:3]


def test_a_probe_that_holds_skips_the_operation_without_asking(monkeypatch):
    class Operation:
        def _inner(**arguments):
            yield f"run {arguments['path']}"

    fake = FakeHost([["yes", "no"]])  # the probes' lines, as together() hands them on
    monkeypatch.setattr(ops, "host", fake)
    monkeypatch.setitem(ops.WANTED, "fake", {"directories": [], "accounts": [], "probes": ["held", "not held"]})
    monkeypatch.setitem(ops.STOCK, "fake", ops.Stock(packages=set(), units={}, files={}))
    assert list(ops._unless._inner(holds="held", operation=Operation, arguments={"path": "/a"})) == []
    assert fake.asked == 1 and ops.STOCK["fake"].settled
    assert list(ops._unless._inner(holds="not held", operation=Operation, arguments={"path": "/b"})) == ["run /b"]
    assert fake.asked == 1 and ops.STOCK["fake"].settled  # it made its test hold, and changed nothing else
    assert list(ops._unless._inner(holds="not held", operation=Operation, arguments={"path": "/b"})) == []


def test_a_new_system_user_is_made_from_the_stock_alone(monkeypatch):
    """A fresh host's users and groups: one useradd or groupadd each, without pyinfra's facts of
    every account (a second or so each); then the accounts are read again."""
    fake = FakeHost([])
    monkeypatch.setattr(ops, "host", fake)
    monkeypatch.setitem(ops.WANTED, "fake", {"directories": [], "accounts": ["vmail", "x"], "probes": []})
    accounts = {"passwd": {}, "group": {"vmail": ["vmail", "x", "5000", ""]}}
    monkeypatch.setitem(ops.STOCK, "fake", ops.Stock(packages=set(), units={}, files={}, extra={"accounts": accounts}))
    assert list(ops._user._inner(user="vmail", home="/var/vmail", group=None, uid=5000)) == [
        f"useradd -M -d /var/vmail -s {ops.NOLOGIN} -g vmail --uid 5000 vmail"]
    assert ops.STOCK["fake"].extra is None and fake.asked == 0  # asked again at the next question
    ops.STOCK["fake"].extra = {"accounts": accounts}
    assert list(ops._group._inner(group="x", gid=None)) == ["groupadd -r x"]


def test_files_written_by_a_run_that_failed_before_applying_them_are_applied_next_time(monkeypatch):
    """Nothing lost: a run that wrote a service's files and then failed (its checker, restart or
    command) leaves a marker; the next run, though the files are current, applies them again,
    where it once reported no change and left them unapplied."""
    current = File.text("/etc/a", "one")
    marker = ops.pending_marker(Service("x", (current,)))
    monkeypatch.setattr(ops, "host", FakeHost([]))
    for left, expected in (("missing", []), ("root root 644 e3b0c4", [f"mkdir -p {ops.PENDING} && touch {marker}"])):
        monkeypatch.setitem(ops.STOCK, "fake", ops.Stock(packages=set(), units={},
                                                         files={"/etc/a": state(current), marker: left}))
        assert list(ops.install_files._inner(files=(current,), pending=marker)) == expected
    newer = File.text("/etc/a", "two")  # a change makes the marker before it writes a file
    commands = list(ops.install_files._inner(files=(newer,), pending=marker))
    assert commands[-1].startswith(f"mkdir -p {ops.PENDING} && touch {marker} && ")
    assert "mv -f" in commands[-1] and not any("mv -f" in c for c in commands[:-1] if isinstance(c, str))


@pytest.mark.parametrize("files, units, rereads", [
    (("/etc/systemd/system/mailstack-x.service",), {}, False),  # a unit systemd never saw: read on first use
    (("/etc/systemd/system/mailstack-x.service",), {"mailstack-x.service": "inactive"}, False),
    (("/etc/systemd/system/mailstack-x.service",), {"mailstack-x.service": "active enabled"}, True),  # it knows it
    (("/etc/systemd/system/nsd.service.d/mailstack.conf",), {}, True),  # a drop-in for a unit it has loaded
    (("/etc/nsd/nsd.conf",), {}, False),  # no definition at all
])
def test_systemd_rereads_its_units_only_for_a_definition_it_may_hold(monkeypatch, files, units, rereads):
    """A fresh deploy does not pay a systemd reload (seconds on a busy host) for each new unit;
    a changed definition, a drop-in or a unit systemd knows is re-read before the restart."""
    monkeypatch.setattr(ops, "host", FakeHost([]))
    monkeypatch.setitem(ops.STOCK, "fake", ops.Stock(packages=set(), files=dict.fromkeys(files, "missing"),
                                                     units=units))
    service = Service("mailstack-x", tuple(File.text(path, "x") for path in files))
    assert ops.rereads_units(service) is rereads
    monkeypatch.setitem(ops.STOCK, "fake", ops.Stock(packages=set(), files=dict.fromkeys(files, "root root 644 abc"),
                                                     units=units))
    assert ops.rereads_units(service) is (bool(files[0].startswith("/etc/systemd/")))  # a definition that was there


def test_a_big_file_is_hashed_once_then_known_by_its_stamp(monkeypatch, tmp_path):
    """Issue 24: a ~100 MB program is not read on every deploy. The host-side command (run
    here in a real shell) hashes it once into its stamp, answers from the stamp while the
    file's size, inode and mtime are unchanged, and hashes again once the file is replaced."""
    monkeypatch.setattr(ops, "STAMPS", str(tmp_path / "stamps"))
    program, small = tmp_path / "weed", tmp_path / "small"
    program.write_bytes(b"v1" * ops.BIG)
    small.write_text("x")

    def states():
        command = ops.FileStates().command([str(program), str(small), str(tmp_path / "none")],
                                           stamped=(str(program),))
        output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
        return ops.FileStates().process(output.splitlines())

    first = states()
    assert first[0].endswith(hashlib.sha256(program.read_bytes()).hexdigest()) and first[2] == "missing"
    assert first[1].split()[2:] == [oct(small.stat().st_mode & 0o777)[2:], hashlib.sha256(b"x").hexdigest()]
    [stamp] = (tmp_path / "stamps").iterdir()
    stamp.write_text(stamp.read_text().rsplit(" ", 1)[0] + " from-the-stamp\n")
    assert states()[0].endswith(" from-the-stamp")  # not read again: the stamp answers
    program.write_bytes(b"v2" * ops.BIG)  # same size, new mtime: hashed again
    assert states()[0].endswith(hashlib.sha256(program.read_bytes()).hexdigest())


def test_installing_a_big_file_records_its_stamp(monkeypatch):
    program = File("/usr/local/bin/weed", b"x" * ops.BIG, mode="0755")
    monkeypatch.setattr(ops, "host", FakeHost(["missing"]))
    commands = [c for c in ops.install_files._inner(files=(program,)) if isinstance(c, str)]
    assert commands[-1].endswith(f"{hashlib.sha256(program.content).hexdigest()} > {ops.stamp_path(program.path)}")
    assert ops.stamped([program, File.text("/etc/a", "one")]) == [program.path]


def test_every_component_is_declared_once():
    names = [c.name for c in COMPONENTS]
    assert len(names) == len(set(names))
    assert all(c.configure or c.extends for c in COMPONENTS)  # each renders something


def test_clamav_off_leaves_no_trace_in_rspamd():
    off = check_text(VALID + "clamav: {enabled: false}\n", "inv.yml")
    plan = plans(off)["mx1"]
    files = rendered(VALID + "clamav: {enabled: false}\n", "mx1")
    assert not any("clamav" in path or "antivirus" in path or "force_actions" in path for path in files)
    (service,) = [s for c in plan.components for s in configured(c, plan) if s.unit == "rspamd"]
    assert {"/etc/rspamd/local.d/antivirus.conf", "/etc/rspamd/local.d/force_actions.conf"} <= set(service.absent)
    assert "/etc/rspamd/local.d/antivirus.conf" in rendered(VALID, "mx1")


def test_a_lab_never_runs_freshclam():
    files = rendered(LAB, "mail")
    assert "/etc/clamav/freshclam.conf" not in files  # masked by the deploy, never configured


def test_without_a_sandbox_rspamd_asks_no_peekaboo():
    plan = plans(check_text(VALID, "inv.yml"))["mx1"]
    (service,) = [s for c in plan.components for s in configured(c, plan) if s.unit == "rspamd"]
    assert "/etc/rspamd/mailstack.d/peekaboo.lua" in service.absent
    assert not any("peekaboo" in f.path for f in service.files)


def test_the_hosts_get_every_pinned_wheel():
    files = rendered(LAB, "mail")
    wheels = {p.rsplit("/", 1)[1].split("-")[0].lower().replace("_", "") for p in files if p.endswith(".whl")}
    pinned = {line.split("==")[0].lower().replace("_", "").replace("-", "")
              for line in files["/opt/mailstack-peekaboo/wheels/requirements.txt"].lines}
    assert pinned <= wheels and "peekabooav" in wheels



def test_backups_to_an_external_s3_use_its_endpoint_region_and_keys(tmp_path):
    keys = tmp_path / "backup.keys"
    keys.write_text("AKEXTERNAL\nexternal-secret\n")
    text = VALID + ("backup: {enabled: true, locked_days: 0}\n"
                    f"s3: {{provider: external, endpoint: 'https://s3.example.org', region: eu-central-1, "
                    f"key_files: {{backup: '{keys}'}}}}\n")
    files = rendered(text, "mx1")
    env = files["/etc/mailstack/backup.env"]
    assert env.secret and env.mode == "0600"
    assert {"RESTIC_REPOSITORY=s3:https://s3.example.org/mailstack-backup/mx1", "AWS_ACCESS_KEY_ID=AKEXTERNAL",
            "AWS_SECRET_ACCESS_KEY=external-secret", "AWS_DEFAULT_REGION=eu-central-1"} <= set(env.lines)
    assert not any(path.startswith("/etc/seaweedfs") for host in ("mx1", "other") for path in rendered(text, host))


def test_an_external_oidc_provider_is_asked_with_the_operators_client_secret(tmp_path):
    secret = tmp_path / "client.secret"
    secret.write_text("operator-secret\n")
    text = VALID + (f"oidc: {{enabled: true, provider: external, introspection_url: "
                    f"'https://idp.example.org/introspect', client_secret_file: '{secret}'}}\n")
    files = rendered(text, "mx1")
    assert "introspection_url = https://mailstack:operator-secret@idp.example.org/introspect" in \
        files["/etc/dovecot/mailstack/oauth2.conf.ext"].lines
    assert not any(path.startswith("/etc/glewlwyd") for host in ("mx1", "other") for path in rendered(text, host))


def test_backup_schedules_and_retention_come_from_the_inventory():
    text = VALID.replace("roles: [smime]", "roles: [smime, storage]") + (
        "backup: {enabled: true, schedule: '*-*-* 02:30', check_schedule: Sun, keep_daily: 3, keep_weekly: 2, "
        "keep_monthly: 1}\n")
    files = rendered(text, "mx1")
    assert "OnCalendar=*-*-* 02:30" in files["/etc/systemd/system/mailstack-backup.timer"].lines
    assert "OnCalendar=Sun" in files["/etc/systemd/system/mailstack-backup-check.timer"].lines
    assert 'KEEP = ["--keep-daily", "3", "--keep-weekly", "2", "--keep-monthly", "1"]' in \
        files["/usr/local/sbin/mailstack-backup"].lines
    assert "/etc/mailstack/backup.env" not in rendered(text.replace("enabled: true, ", "enabled: false, "), "mx1")


def test_metric_labels_are_escaped_so_one_value_voids_no_textfile(tmp_path):
    """The deployed metrics job, loaded as it runs on the host: a directory's or a daemon's
    text with a quote, a backslash or a line break becomes one valid label value."""
    script = tmp_path / "mailstack_metrics.py"
    script.write_bytes(rendered(LAB, "mail")[METRICS].content)
    spec = importlib.util.spec_from_file_location("mailstack_metrics", script)
    metrics = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(metrics)  # defines; main() runs only as a program
    assert metrics.label('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert metrics.label("alice@example.test") == '"alice@example.test"'


def test_the_sessions_ended_are_those_of_users_whose_login_changed_or_went(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "logins_applied", ROOT / "deploys/dovecot/templates/mailstack-logins-applied.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    etc, kept = tmp_path / "etc", tmp_path / "kept"
    etc.mkdir()
    (etc / "passdb-imap").write_text("ann@x:{H}1::\nben@x:{H}2::\ncid@x:{H}3::\n")
    (etc / "passdb-pop3").write_text("ann@x:{H}1::\n")
    (etc / "userdb").write_text("ann@x::::::: userdb_quota_rule=*:storage=1G\n")
    assert tool.changed(etc, kept) == set()  # the first run: nothing to compare with
    kept.mkdir()
    for path in etc.glob("passdb-*"):
        (kept / path.name).write_text(path.read_text())
    assert tool.changed(etc, kept) == set()
    (etc / "passdb-imap").write_text("ann@x:{H}1::\nben@x:{H}NEW::\ndan@x:{H}4::\n")  # ben's password, cid gone
    (etc / "passdb-pop3").unlink()  # POP3 off: ann's POP3 sessions end too
    (etc / "userdb").write_text("ann@x::::::: userdb_quota_rule=*:storage=2G\n")  # a quota: no session ends
    assert tool.changed(etc, kept) == {"ben@x", "cid@x", "ann@x"}



def test_the_web_host_answers_each_domain_by_the_name_the_handshake_gave():
    """Issue 25: one site per platform domain, a default that answers nothing (421), and a
    request whose Host differs from the TLS name (SNI) refused: never another site's answers."""
    conf = rendered(LAB, "mail")["/etc/nginx/sites-enabled/mailstack"].content.decode()
    default, *sites = conf.split("server {")[1:]
    assert "default_server" in default and "return 421;" in default
    names = [site.split("server_name ", 1)[1].split(";")[0] for site in sites]
    assert "mta-sts.example.test autoconfig.example.test autodiscover.example.test" in names
    assert "autoconfig.legacy.test autodiscover.legacy.test" in names  # mta_sts: none, no policy name
    assert all("if ($ssl_server_name != $host) { return 421; }" in site for site in sites)
    assert "listen 443 ssl default_server;" in conf and ":80" not in conf


def test_an_mta_sts_policy_names_the_mx_and_its_id_follows_it():
    files = rendered(LAB, "mail")
    assert files["/var/www/mailstack/example.test/.well-known/mta-sts.txt"].lines == [
        "version: STSv1", "mode: enforce", "mx: mail.lab.test", "max_age: 604800"]
    assert "/var/www/mailstack/legacy.test/.well-known/mta-sts.txt" not in files
    from deploys.web import mta_sts_policy, policy_id
    inv = check_text(LAB, "lab.yml")
    testing = check_text(LAB.replace("    mta_sts: enforce\n", "    mta_sts: testing\n"), "lab.yml")
    ids = {policy_id(mta_sts_policy(i, i.domain("example.test"))) for i in (inv, testing)}
    assert len(ids) == 2 and all(len(i) <= 32 and i.isalnum() for i in ids)


def test_autoconfig_offers_only_what_the_domain_allows():
    files = rendered(LAB, "mail")
    assert '    <incomingServer type="pop3">' in files["/var/www/mailstack/example.test/mail/config-v1.1.xml"].lines
    pop3less = files["/var/www/mailstack/tenant-b.test/mail/config-v1.1.xml"].content.decode()
    assert 'type="imap"' in pop3less and "pop3" not in pop3less
    assert "POP3" not in files["/var/www/mailstack/tenant-b.test/autodiscover/autodiscover.xml"].content.decode()


def test_mta_sts_without_a_web_host_is_refused():
    text = LAB.replace(", web, webmail]\n", "]\n", 1)
    with pytest.raises(Exception, match=r"domains\[0\]\.mta_sts.*needs a host with the 'web' role"):
        check_text(text, "lab.yml")


def test_mta_sts_for_a_domain_the_platform_does_not_serve_is_refused():
    """ext.test's MX is an outside host: a policy set for it would be accepted and never served."""
    text = LAB.replace("    mx: [ext]\n", "    mx: [ext]\n    mta_sts: enforce\n", 1)
    with pytest.raises(Exception, match=r"mta_sts: ext.test is not a domain of the platform"):
        check_text(text, "lab.yml")

