<?php
// Posts: reading them through the cache, checking what visitors send, and
// storing new posts with their images.

declare(strict_types=1);

if (!defined('SITE_ROOT')) {
    http_response_code(404);
    exit;
}

/** The cache key of the post list; bump the version when a post's shape changes. */
const POSTS_KEY = 'posts:v1';
const POSTS_TTL = 60;
const POSTS_SHOWN = 50;
const TITLE_MAX = 200;
const BODY_MAX = 10000;
const IMAGE_MAX_BYTES = 5 << 20;

/** The image types a post may carry, by MIME type as the file's content says. */
const IMAGE_TYPES = [
    'image/png' => ['ext' => 'png', 'type' => IMAGETYPE_PNG],
    'image/jpeg' => ['ext' => 'jpg', 'type' => IMAGETYPE_JPEG],
    'image/gif' => ['ext' => 'gif', 'type' => IMAGETYPE_GIF],
    'image/webp' => ['ext' => 'webp', 'type' => IMAGETYPE_WEBP],
];

/** BadInput is a request the visitor can fix; its message is shown to them. */
final class BadInput extends RuntimeException
{
    public function __construct(string $message, public readonly int $status = 400)
    {
        parent::__construct($message);
    }
}

/**
 * Returns the newest posts and whether they came from the cache.
 *
 * Cache-aside: read the cache; on a miss read the db and fill the cache. A
 * cache that is down costs a log line, not the page.
 *
 * @return array{0: list<array{id: int, title: string, body: string, image: ?string, created_at: int}>, 1: bool}
 */
function posts_recent(): array
{
    $cache = null;
    try {
        $cache = cache();
        $json = $cache->get(POSTS_KEY);
        if ($json !== null) {
            $posts = json_decode($json, true);
            if (is_array($posts)) {
                return [$posts, true];
            }
            error_log('cache: ' . POSTS_KEY . ' holds no JSON list; reading the db');
        }
    } catch (CacheError $e) {
        error_log('cache: ' . $e->getMessage());
        $cache = null;
    }
    $posts = db_with_schema(function (PDO $db): array {
        $rows = $db->query('SELECT id, title, body, image, created_at FROM posts ORDER BY id DESC LIMIT ' . POSTS_SHOWN)->fetchAll();
        return array_map(fn (array $r): array => [
            'id' => (int) $r['id'],
            'title' => (string) $r['title'],
            'body' => (string) $r['body'],
            'image' => $r['image'] === null ? null : (string) $r['image'],
            'created_at' => (int) $r['created_at'],
        ], $rows);
    });
    if ($cache !== null) {
        try {
            $cache->set(POSTS_KEY, json_encode($posts, JSON_THROW_ON_ERROR), POSTS_TTL);
        } catch (CacheError $e) {
            error_log('cache: ' . $e->getMessage());
        }
    }
    return [$posts, false];
}

/**
 * Checks a new post's fields and returns them trimmed.
 *
 * @return array{title: string, body: string}
 */
function posts_check(mixed $title, mixed $body): array
{
    $title ??= '';
    $body ??= '';
    if (!is_string($title) || !is_string($body)) {
        throw new BadInput('Send the title and the text as plain form fields.');
    }
    // A UTF-8 character takes at most 4 bytes: refuse a huge text before
    // counting its characters.
    if (strlen($title) > 4 * TITLE_MAX || strlen($body) > 4 * BODY_MAX) {
        throw new BadInput(sprintf('Keep the title under %d characters and the text under %d.', TITLE_MAX, BODY_MAX));
    }
    $title = trim($title);
    $body = trim($body);
    $titleLen = text_length($title);
    $bodyLen = text_length($body);
    if ($titleLen === null || $bodyLen === null) {
        throw new BadInput('The title and the text must be UTF-8 text.');
    }
    if ($titleLen === 0) {
        throw new BadInput('Give the post a title.');
    }
    if ($titleLen > TITLE_MAX) {
        throw new BadInput(sprintf('The title has %d characters; shorten it to %d.', $titleLen, TITLE_MAX));
    }
    if (preg_match('/[\x00-\x1F\x7F]/', $title)) {
        throw new BadInput('The title must be a single line of text.');
    }
    if ($bodyLen > BODY_MAX) {
        throw new BadInput(sprintf('The text has %d characters; shorten it to %d.', $bodyLen, BODY_MAX));
    }
    if (preg_match('/[\x00-\x08\x0B\x0C\x0E-\x1F\x7F]/', $body)) {
        throw new BadInput('The text contains control characters; remove them.');
    }
    return ['title' => $title, 'body' => $body];
}

/** Counts the characters of UTF-8 text, or returns null if it is not UTF-8. */
function text_length(string $s): ?int
{
    $n = preg_match_all('/./su', $s);
    return $n === false ? null : $n;
}

/** Stores a checked post and invalidates the cached list. */
function posts_add(string $title, string $body, ?string $image): void
{
    db_with_schema(function (PDO $db) use ($title, $body, $image): void {
        $st = $db->prepare('INSERT INTO posts (title, body, image, created_at) VALUES (?, ?, ?, ?)');
        $st->execute([$title, $body, $image, time()]);
    });
    try {
        cache()->delete(POSTS_KEY);
    } catch (CacheError $e) {
        // The list is stale until the entry expires (POSTS_TTL seconds).
        error_log('cache: ' . $e->getMessage());
    }
}

/**
 * Checks an uploaded image by its content and stores it under UPLOAD_DIR,
 * where the static node serves it as /uploads/NAME. Returns NAME, or null
 * when no file was chosen.
 *
 * @param mixed $file one entry of $_FILES
 */
function image_store(mixed $file, string $dir): ?string
{
    if ($file === null) {
        return null;
    }
    if (!is_array($file) || !is_int($file['error'] ?? null) || !is_string($file['tmp_name'] ?? null)) {
        throw new BadInput('Send one image at most.');
    }
    switch ($file['error']) {
        case UPLOAD_ERR_OK:
            break;
        case UPLOAD_ERR_NO_FILE:
            return null;
        case UPLOAD_ERR_INI_SIZE:
        case UPLOAD_ERR_FORM_SIZE:
            throw new BadInput('The image is larger than 5 MB; send a smaller one.', 413);
        case UPLOAD_ERR_PARTIAL:
            throw new BadInput('The image arrived incomplete; send it again.');
        default:
            throw new RuntimeException("upload failed with PHP error {$file['error']}");
    }
    $tmp = $file['tmp_name'];
    if (!is_uploaded_file($tmp)) {
        throw new BadInput('Send the image with the form.');
    }
    $size = filesize($tmp);
    if ($size === false || $size === 0) {
        throw new BadInput('The image is empty.');
    }
    if ($size > IMAGE_MAX_BYTES) {
        throw new BadInput('The image is larger than 5 MB; send a smaller one.', 413);
    }
    // Trust the bytes, not the file name or the browser's Content-Type: the
    // MIME type that finfo reads must agree with what getimagesize parses.
    $mime = (new finfo(FILEINFO_MIME_TYPE))->file($tmp);
    $kind = IMAGE_TYPES[$mime] ?? null;
    $info = @getimagesize($tmp);
    if ($kind === null || $info === false || $info[2] !== $kind['type'] || $info[0] < 1 || $info[1] < 1) {
        throw new BadInput('The image must be a PNG, JPEG, GIF or WebP file.');
    }

    $name = bin2hex(random_bytes(16)) . '.' . $kind['ext'];
    // Write under a hidden temporary name in the same directory, then rename:
    // the static node never serves a half-written file.
    $part = "$dir/.$name.part";
    if (!move_uploaded_file($tmp, $part)) {
        throw new RuntimeException("move upload to $part failed");
    }
    if (!chmod($part, 0644) || !rename($part, "$dir/$name")) {
        @unlink($part);
        throw new RuntimeException("store upload as $dir/$name failed");
    }
    return $name;
}
