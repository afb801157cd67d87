<?php
/**
 * Managed by mailstack: tells Dovecot, before the login, the address of the browser behind
 * this webmail (IMAP ID x-originating-ip; Dovecot trusts it from the webmail hosts only), so
 * that a wrong password typed here counts against that address, as from a mail client.
 */
class mailstack_client_ip extends rcube_plugin
{
    public function init()
    {
        $this->add_hook('storage_connect', [$this, 'storage_connect']);
    }

    public function storage_connect($args)
    {
        $args['preauth_ident'] = [
            'x-originating-ip' => rcube_utils::remote_addr(),
            'x-originating-port' => (string) ($_SERVER['REMOTE_PORT'] ?? ''),
        ];
        return $args;
    }
}
