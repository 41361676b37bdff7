<?php
/*
 * wp-config.php for WordPress in a bulkhead stack, written by "bulkhead init
 * --app wordpress". Nothing here names a host or a password: php-fpm gives
 * every app node its peers in the environment (DB_HOST, DB_PORT, DB_NAME,
 * DB_USER and DB_PASSWORD_FILE), so the same file works on every node and in
 * every stack. Copy it into your own WordPress tree to run that instead.
 */

function bulkhead_env(string $name): string
{
    $v = getenv($name);
    if ($v === false || $v === '') {
        http_response_code(503);
        error_log("wp-config.php: $name is not set: is the stack's db tier missing?");
        exit("This node has no database ($name is not set).\n");
    }
    return $v;
}

define('DB_NAME', bulkhead_env('DB_NAME'));
define('DB_USER', bulkhead_env('DB_USER'));
define('DB_PASSWORD', trim((string) file_get_contents(bulkhead_env('DB_PASSWORD_FILE'))));
define('DB_HOST', bulkhead_env('DB_HOST') . ':' . bulkhead_env('DB_PORT'));
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');

/*
 * The edge's health check and a deploy's (site.check): 200 when this node
 * runs PHP and reaches the database, before WordPress loads, so that it
 * answers before the installer has run too.
 */
if (strtok($_SERVER['REQUEST_URI'] ?? '', '?') === '/healthz') {
    header('Content-Type: text/plain');
    header('Cache-Control: no-store');
    mysqli_report(MYSQLI_REPORT_OFF);
    $db = mysqli_init();
    $db->options(MYSQLI_OPT_CONNECT_TIMEOUT, 2);
    $ok = @$db->real_connect(getenv('DB_HOST'), DB_USER, DB_PASSWORD, DB_NAME, (int) getenv('DB_PORT'))
        && $db->query('SELECT 1');
    http_response_code($ok ? 200 : 503);
    exit($ok ? "ok\n" : "db: fail\n");
}

/*
 * Keys and salts sign logins and nonces: every app node must have the same
 * ones, so they are written here once, by init. Replace them to log every
 * user out.
 */
define('AUTH_KEY',         '@AUTH_KEY@');
define('SECURE_AUTH_KEY',  '@SECURE_AUTH_KEY@');
define('LOGGED_IN_KEY',    '@LOGGED_IN_KEY@');
define('NONCE_KEY',        '@NONCE_KEY@');
define('AUTH_SALT',        '@AUTH_SALT@');
define('SECURE_AUTH_SALT', '@SECURE_AUTH_SALT@');
define('LOGGED_IN_SALT',   '@LOGGED_IN_SALT@');
define('NONCE_SALT',       '@NONCE_SALT@');

$table_prefix = 'wp_';

/*
 * The code is a read-only release that "bulkhead deploy" replaces: WordPress
 * must not try to update or install code itself. The nodes have no route out
 * either, so requests to other hosts fail at once instead of timing out.
 */
define('DISALLOW_FILE_MODS', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_HTTP_BLOCK_EXTERNAL', true);
define('WP_DEBUG', false);

if (!defined('ABSPATH')) {
    define('ABSPATH', __DIR__ . '/');
}
require_once ABSPATH . 'wp-settings.php';
