<?php
// The front controller. On an app node the web server hands it every request
// that is not a file (Apache's FallbackResource /index.php). The edge sends
// static paths (/assets/, /uploads/, *.css, ...) to the static node, which
// serves the same files without PHP, so they never get here.
//
// Configuration comes from the environment php-fpm sets: DB_DRIVER, DB_HOST,
// DB_PORT, DB_NAME, DB_USER, DB_PASSWORD_FILE, CACHE_DRIVER, CACHE_HOST,
// CACHE_PORT, NODE_NAME and UPLOAD_DIR (see lib/config.php).

declare(strict_types=1);

const SITE_ROOT = __DIR__;

// Errors go to the log, never to the visitor; the PHP version stays private too.
ini_set('display_errors', '0');
ini_set('log_errors', '1');
header_remove('X-Powered-By');

require __DIR__ . '/lib/config.php';
require __DIR__ . '/lib/db.php';
require __DIR__ . '/lib/cache.php';
require __DIR__ . '/lib/posts.php';
require __DIR__ . '/lib/view.php';

/** Answers GET /: the posts, newest first, and the form for a new one. */
function show_posts(): void
{
    $token = csrf_token();
    [$posts, $hit] = posts_recent();
    header('X-Cache: ' . ($hit ? 'hit' : 'miss'));
    page('Posts', function () use ($token, $posts): void {
        post_form($token);
        echo "<h2>Posts</h2>\n";
        post_list($posts);
    });
}

/** Answers POST /posts: checks and stores a new post, then sends the visitor back to /. */
function add_post(): void
{
    // PHP drops the whole body when it exceeds post_max_size.
    if ($_POST === [] && $_FILES === [] && (int) ($_SERVER['CONTENT_LENGTH'] ?? 0) > 0) {
        throw new BadInput('The post is too large; send an image of at most 5 MB.', 413);
    }
    csrf_check($_POST['csrf'] ?? null);
    try {
        $post = posts_check($_POST['title'] ?? null, $_POST['body'] ?? null);
        $image = image_store($_FILES['image'] ?? null, config()['upload_dir']);
    } catch (BadInput $e) {
        // Send the form back with what the visitor typed.
        $values = [
            'title' => is_string($_POST['title'] ?? null) ? $_POST['title'] : '',
            'body' => is_string($_POST['body'] ?? null) ? $_POST['body'] : '',
        ];
        $token = csrf_token();
        page('New post', fn () => post_form($token, $values, $e->getMessage()), $e->status);
        return;
    }
    try {
        posts_add($post['title'], $post['body'], $image);
    } catch (Throwable $e) {
        if ($image !== null) {
            @unlink(config()['upload_dir'] . '/' . $image);
        }
        throw $e;
    }
    http_response_code(303);
    header('Location: /');
    header('Cache-Control: no-store');
}

/**
 * Answers GET /healthz for the edge's health checks: 200 when this node can
 * use both the db and the cache, 503 naming the one that failed otherwise.
 * Short timeouts keep the answer within about 3 seconds when a peer is down.
 */
function healthz(): void
{
    $status = ['status' => 'ok', 'db' => 'ok', 'cache' => 'ok', 'node' => config_node()];
    try {
        $cache = cache(0.5);
        $key = 'healthz:' . $status['node'];
        $value = bin2hex(random_bytes(8));
        $cache->set($key, $value, 10);
        if ($cache->get($key) !== $value) {
            throw new CacheError("read back $key: wrong value");
        }
    } catch (Throwable $e) {
        error_log('healthz: cache: ' . $e->getMessage());
        $status['cache'] = 'fail';
    }
    try {
        if ((int) db(2)->query('SELECT 1')->fetchColumn() !== 1) {
            throw new RuntimeException('SELECT 1 returned something else');
        }
    } catch (Throwable $e) {
        error_log('healthz: db: ' . $e->getMessage());
        $status['db'] = 'fail';
    }
    $ok = $status['db'] === 'ok' && $status['cache'] === 'ok';
    if (!$ok) {
        $status['status'] = 'fail';
    }
    http_response_code($ok ? 200 : 503);
    header('Content-Type: application/json');
    header('Cache-Control: no-store');
    echo json_encode($status, JSON_THROW_ON_ERROR), "\n";
}

function not_allowed(string ...$allow): void
{
    header('Allow: ' . implode(', ', $allow));
    error_page(405, 'This address does not take that kind of request.');
}

function route(string $method, string $path): void
{
    $read = $method === 'GET' || $method === 'HEAD';
    if ($path === '/') {
        if ($read) {
            show_posts();
        } else {
            not_allowed('GET', 'HEAD');
        }
    } elseif ($path === '/posts') {
        if ($method === 'POST') {
            add_post();
        } else {
            not_allowed('POST');
        }
    } elseif ($path === '/healthz') {
        if ($read) {
            healthz();
        } else {
            not_allowed('GET', 'HEAD');
        }
    } else {
        // Includes /uploads/...: the static node serves uploads, never PHP.
        error_page(404, 'There is nothing at this address.');
    }
}

ob_start();
try {
    $path = explode('?', (string) ($_SERVER['REQUEST_URI'] ?? '/'), 2)[0];
    route((string) ($_SERVER['REQUEST_METHOD'] ?? 'GET'), $path === '' ? '/' : $path);
} catch (BadInput $e) {
    ob_clean();
    header_remove();
    error_page($e->status, $e->getMessage());
} catch (Throwable $e) {
    error_log(sprintf('%s %s: %s: %s at %s:%d', $_SERVER['REQUEST_METHOD'] ?? '-', $_SERVER['REQUEST_URI'] ?? '-', get_class($e), $e->getMessage(), $e->getFile(), $e->getLine()));
    ob_clean();
    header_remove();
    error_page(500, 'The site could not answer this request. Try again in a moment.');
}
ob_end_flush();
