<?php
// Managed by mailstack. Roundcube reads this file; the settings themselves are in
// mailstack.json beside it (rendered from the inventory), chosen by the site the request
// asked for. A name that is not one of the sites gets nothing.
require '/etc/roundcube/debian-db-roundcube.php';  // the database Debian's dbconfig made
$settings = json_decode(file_get_contents(__DIR__ . '/mailstack.json'), true, 16, JSON_THROW_ON_ERROR);
$site = strtolower($_SERVER['HTTP_HOST'] ?? '');
if (PHP_SAPI !== 'cli' && !isset($settings['sites'][$site])) {
    http_response_code(421);
    exit;
}
$config = array_merge($config, $settings['common'], $settings['sites'][$site] ?? []);
// OpenID Connect: a fresh nonce with each login sent to the provider
$config['oauth_auth_parameters'] = ['nonce' => bin2hex(random_bytes(16))];
