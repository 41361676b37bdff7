<?php
// Configuration. It comes only from the environment that php-fpm sets for
// its workers (env[...] lines in the pool), so the same code runs unchanged
// on every app node and no secret lives in the site's files.

declare(strict_types=1);

if (!defined('SITE_ROOT')) {
    http_response_code(404);
    exit;
}

/**
 * Returns the site's settings, read from the environment once per request.
 *
 * @return array{db_driver: string, db_host: string, db_port: int, db_name: string,
 *   db_user: string, db_password_file: string, cache_driver: string,
 *   cache_host: string, cache_port: int, node: string, upload_dir: string}
 */
function config(): array
{
    static $config = null;
    if ($config !== null) {
        return $config;
    }
    $dbDriver = env('DB_DRIVER', 'mysql');
    if ($dbDriver !== 'mysql' && $dbDriver !== 'pgsql') {
        throw new RuntimeException("DB_DRIVER is \"$dbDriver\"; set it to mysql or pgsql");
    }
    $cacheDriver = env('CACHE_DRIVER', 'memcached');
    if ($cacheDriver !== 'memcached' && $cacheDriver !== 'redis') {
        throw new RuntimeException("CACHE_DRIVER is \"$cacheDriver\"; set it to memcached or redis");
    }
    $uploadDir = rtrim(env('UPLOAD_DIR', SITE_ROOT . '/uploads'), '/');
    if (!str_starts_with($uploadDir, '/')) {
        throw new RuntimeException("UPLOAD_DIR is \"$uploadDir\"; set it to an absolute path");
    }
    $node = env('NODE_NAME', '');
    if ($node === '') {
        $node = (string) gethostname();
    }
    $config = [
        'db_driver' => $dbDriver,
        'db_host' => host('DB_HOST'),
        'db_port' => port('DB_PORT', $dbDriver === 'mysql' ? 3306 : 5432),
        'db_name' => env('DB_NAME', 'site'),
        'db_user' => env('DB_USER', 'site'),
        'db_password_file' => env('DB_PASSWORD_FILE', ''),
        'cache_driver' => $cacheDriver,
        'cache_host' => host('CACHE_HOST'),
        'cache_port' => port('CACHE_PORT', $cacheDriver === 'memcached' ? 11211 : 6379),
        'node' => $node,
        'upload_dir' => $uploadDir,
    ];
    return $config;
}

/** Returns environment variable $name, or $default when it is unset or empty. */
function env(string $name, ?string $default = null): string
{
    $value = getenv($name);
    if ($value === false || $value === '') {
        if ($default === null) {
            throw new RuntimeException("environment variable $name is not set");
        }
        return $default;
    }
    return $value;
}

/** Reads a required host name or address; it ends up inside a PDO DSN, so no ";". */
function host(string $name): string
{
    $host = env($name);
    if (!preg_match('/^[A-Za-z0-9.:_-]+$/', $host)) {
        throw new RuntimeException("$name is \"$host\"; set it to a host name or IP address");
    }
    return $host;
}

function port(string $name, int $default): int
{
    $raw = env($name, (string) $default);
    $port = filter_var($raw, FILTER_VALIDATE_INT, ['options' => ['min_range' => 1, 'max_range' => 65535]]);
    if ($port === false) {
        throw new RuntimeException("$name is \"$raw\"; set it to a port from 1 to 65535");
    }
    return $port;
}
