<?php
// HTML output and the form's CSRF token. Everything a visitor or the
// database supplies goes through h() on its way out.

declare(strict_types=1);

if (!defined('SITE_ROOT')) {
    http_response_code(404);
    exit;
}

const CSRF_COOKIE = 'csrf';

/** Escapes text for HTML content and attribute values. */
function h(string $s): string
{
    return htmlspecialchars($s, ENT_QUOTES | ENT_SUBSTITUTE | ENT_HTML5, 'UTF-8');
}

/** Reports whether the visitor reached the edge over HTTPS. */
function is_https(): bool
{
    // Only the edge can reach an app node, so its X-Forwarded-Proto is trusted.
    return ($_SERVER['HTTP_X_FORWARDED_PROTO'] ?? '') === 'https'
        || (($_SERVER['HTTPS'] ?? '') !== '' && ($_SERVER['HTTPS'] ?? '') !== 'off');
}

/**
 * Returns the visitor's CSRF token, setting the cookie that carries it when
 * there is none yet. The form repeats the token in a hidden field; a forged
 * request from another site cannot read the cookie to copy it.
 */
function csrf_token(): string
{
    $token = $_COOKIE[CSRF_COOKIE] ?? null;
    if (is_string($token) && preg_match('/^[0-9a-f]{64}$/', $token)) {
        return $token;
    }
    $token = bin2hex(random_bytes(32));
    setcookie(CSRF_COOKIE, $token, [
        'path' => '/',
        'secure' => is_https(),
        'httponly' => true,
        'samesite' => 'Lax',
    ]);
    $_COOKIE[CSRF_COOKIE] = $token;
    return $token;
}

/** Checks the double-submitted token: the form field must equal the cookie. */
function csrf_check(mixed $field): void
{
    $cookie = $_COOKIE[CSRF_COOKIE] ?? null;
    if (!is_string($cookie) || !is_string($field) || $cookie === '' || !hash_equals($cookie, $field)) {
        throw new BadInput('The form has expired. Reload the page and send it again.', 403);
    }
}

/** Sends the headers every HTML page carries. */
function html_headers(int $status): void
{
    http_response_code($status);
    header('Content-Type: text/html; charset=utf-8');
    // Pages carry a per-visitor CSRF token, so no shared cache may keep them.
    header('Cache-Control: private, no-cache');
    header("Content-Security-Policy: default-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
    header('X-Content-Type-Options: nosniff');
    header('Referrer-Policy: same-origin');
}

/**
 * Renders a whole page around $main, which echoes the page's content.
 */
function page(string $title, callable $main, int $status = 200): void
{
    html_headers($status);
    $node = config_node();
    ?>
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title><?= h($title) ?></title>
<link rel="icon" href="/assets/logo.svg" type="image/svg+xml">
<link rel="stylesheet" href="/assets/style.css">
<script src="/assets/app.js" defer></script>
</head>
<body>
<header>
<a href="/" class="brand"><img src="/assets/logo.svg" alt="" width="32" height="32"> bulkhead</a>
<p>A split LAMP stack: every tier in its own node.</p>
</header>
<main>
<?php $main(); ?>
</main>
<footer>served by <?= h($node) ?></footer>
</body>
</html>
<?php
}

/** Returns NODE_NAME, or a placeholder when even the configuration is broken. */
function config_node(): string
{
    try {
        return config()['node'];
    } catch (Throwable) {
        return 'an app node';
    }
}

/**
 * Echoes the form for a new post.
 *
 * @param array{title?: string, body?: string} $values what the visitor typed, to send back after an error
 */
function post_form(string $token, array $values = [], string $error = ''): void
{
    ?>
<form method="post" action="/posts" enctype="multipart/form-data" class="new-post">
<h2>New post</h2>
<?php if ($error !== ''): ?>
<p class="error" role="alert"><?= h($error) ?></p>
<?php endif; ?>
<input type="hidden" name="csrf" value="<?= h($token) ?>">
<label>Title <input name="title" required maxlength="<?= TITLE_MAX ?>" value="<?= h($values['title'] ?? '') ?>"></label>
<label>Text <textarea name="body" rows="5" maxlength="<?= BODY_MAX ?>"><?= h($values['body'] ?? '') ?></textarea></label>
<label class="file">Image (PNG, JPEG, GIF or WebP, up to 5 MB)
<input type="file" name="image" accept="image/png,image/jpeg,image/gif,image/webp">
<span class="file-name" aria-live="polite"></span></label>
<button type="submit">Post</button>
</form>
<?php
}

/**
 * Echoes the list of posts.
 *
 * @param list<array{id: int, title: string, body: string, image: ?string, created_at: int}> $posts
 */
function post_list(array $posts): void
{
    if ($posts === []) {
        echo "<p class=\"empty\">No posts yet. Write the first one.</p>\n";
        return;
    }
    echo "<ol class=\"posts\">\n";
    foreach ($posts as $p) {
        ?>
<li id="post-<?= (int) $p['id'] ?>">
<article>
<h3><?= h($p['title']) ?></h3>
<p class="meta">#<?= (int) $p['id'] ?> · <time datetime="<?= h(gmdate('c', $p['created_at'])) ?>"><?= h(gmdate('Y-m-d H:i', $p['created_at'])) ?> UTC</time></p>
<?php if ($p['image'] !== null && $p['image'] !== ''): ?>
<img src="/uploads/<?= h(rawurlencode($p['image'])) ?>" alt="" loading="lazy">
<?php endif; ?>
<?php if ($p['body'] !== ''): ?>
<p><?= nl2br(h($p['body']), false) ?></p>
<?php endif; ?>
</article>
</li>
<?php
    }
    echo "</ol>\n";
}

/** Renders a page that only says what went wrong. */
function error_page(int $status, string $message): void
{
    page("$status " . status_text($status), function () use ($status, $message): void {
        ?>
<h1><?= h(status_text($status)) ?></h1>
<p><?= h($message) ?></p>
<p><a href="/">Back to the posts</a></p>
<?php
    }, $status);
}

function status_text(int $status): string
{
    return match ($status) {
        400 => 'Bad request',
        403 => 'Forbidden',
        404 => 'Not found',
        405 => 'Method not allowed',
        413 => 'Too large',
        503 => 'Service unavailable',
        default => 'Something went wrong',
    };
}
