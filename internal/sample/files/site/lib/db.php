<?php
// The database connection. MariaDB and PostgreSQL are both reached through
// PDO; the few statements that differ branch on DB_DRIVER.

declare(strict_types=1);

if (!defined('SITE_ROOT')) {
    http_response_code(404);
    exit;
}

/**
 * Returns the request's database connection, opening it on first use.
 *
 * $timeout bounds connecting (and, on MariaDB, each read) in seconds, so a
 * dead or filtered db node costs a request seconds, not minutes.
 */
function db(int $timeout = 5): PDO
{
    static $pdo = null;
    if ($pdo !== null) {
        return $pdo;
    }
    $c = config();
    $options = [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_DEFAULT_FETCH_MODE => PDO::FETCH_ASSOC,
        PDO::ATTR_EMULATE_PREPARES => false,
        // Connect timeout for both drivers; pdo_pgsql turns it into libpq's
        // connect_timeout.
        PDO::ATTR_TIMEOUT => $timeout,
    ];
    if ($c['db_driver'] === 'mysql') {
        // mysqlnd waits a day for a reply unless told otherwise.
        ini_set('mysqlnd.net_read_timeout', (string) $timeout);
        // A persistent connection: the php-fpm worker keeps it from one
        // request to the next instead of a TCP connection and a login for
        // every page that reads the db (measured with bench/dataplane.sh,
        // 2026-11). PDO pings it before handing it out again and connects
        // afresh when the db node restarted. The site sets no session state
        // on it (no transactions left open, no variables), so nothing leaks
        // from one request to the next. The db's max_connections counts one
        // connection per PHP worker of the app pool. PostgreSQL's driver
        // does not ping a kept connection, so it connects per request.
        $options[PDO::ATTR_PERSISTENT] = true;
        $dsn = sprintf('mysql:host=%s;port=%d;dbname=%s;charset=utf8mb4', $c['db_host'], $c['db_port'], $c['db_name']);
    } else {
        $dsn = sprintf('pgsql:host=%s;port=%d;dbname=%s', $c['db_host'], $c['db_port'], $c['db_name']);
    }
    $pdo = new PDO($dsn, $c['db_user'], db_password($c['db_password_file']), $options);
    return $pdo;
}

/** Reads the password from the file php-fpm names, so it never sits in the environment. */
function db_password(string $file): ?string
{
    if ($file === '') {
        return null;
    }
    $password = @file_get_contents($file);
    if ($password === false) {
        throw new RuntimeException("cannot read DB_PASSWORD_FILE $file");
    }
    return trim($password);
}

/** Reports whether $e says that a table does not exist. */
function db_missing_table(PDOException $e): bool
{
    $state = $e->errorInfo[0] ?? (string) $e->getCode();
    return $state === '42S02' /* MariaDB */ || $state === '42P01' /* PostgreSQL */;
}

/**
 * Runs $query, creating the schema and trying once more if a table is
 * missing. The schema appears on first use, so a new stack needs no
 * migration step.
 *
 * @template T
 * @param callable(PDO): T $query
 * @return T
 */
function db_with_schema(callable $query): mixed
{
    try {
        return $query(db());
    } catch (PDOException $e) {
        if (!db_missing_table($e)) {
            throw $e;
        }
    }
    try {
        db_create_schema(db());
    } catch (PDOException $e) {
        // Another app node may have created it at the same moment; if not,
        // the retry below fails and says why.
        error_log('create schema: ' . $e->getMessage());
    }
    return $query(db());
}

function db_create_schema(PDO $db): void
{
    if (config()['db_driver'] === 'mysql') {
        $db->exec(<<<'SQL'
            CREATE TABLE IF NOT EXISTS posts (
                id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
                title VARCHAR(200) NOT NULL,
                body TEXT NOT NULL,
                image VARCHAR(64) NULL,
                created_at BIGINT NOT NULL
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
            SQL);
        return;
    }
    $db->exec(<<<'SQL'
        CREATE TABLE IF NOT EXISTS posts (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            title VARCHAR(200) NOT NULL,
            body TEXT NOT NULL,
            image VARCHAR(64),
            created_at BIGINT NOT NULL
        )
        SQL);
}
