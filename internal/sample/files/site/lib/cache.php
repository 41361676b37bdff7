<?php
// The cache node, memcached or redis behind one small interface. Values are
// strings (the callers store JSON), so nothing is ever unserialized from the
// network.

declare(strict_types=1);

if (!defined('SITE_ROOT')) {
    http_response_code(404);
    exit;
}

/** CacheError is any failure to talk to the cache node. */
final class CacheError extends RuntimeException
{
}

interface Cache
{
    /** Returns the value stored under $key, or null when there is none. */
    public function get(string $key): ?string;

    public function set(string $key, string $value, int $ttl): void;

    public function delete(string $key): void;
}

/**
 * Returns a client for the cache node. $timeout (seconds) bounds connecting
 * and every read and write, so a dead cache slows a request down by at most
 * about that much.
 */
function cache(float $timeout = 1.0): Cache
{
    $c = config();
    if ($c['cache_driver'] === 'redis') {
        return new RedisCache($c['cache_host'], $c['cache_port'], $timeout);
    }
    return new MemcachedCache($c['cache_host'], $c['cache_port'], $timeout);
}

final class MemcachedCache implements Cache
{
    private Memcached $m;

    public function __construct(string $host, int $port, float $timeout)
    {
        $ms = max(1, (int) ($timeout * 1000));
        // A persistent instance: the php-fpm worker keeps its connection to
        // the cache node from one request to the next instead of opening a
        // TCP connection for every page (measured with bench/dataplane.sh,
        // 2026-11: the connection cost the app and cache nodes more CPU than
        // the get itself). One instance, so one connection, per worker and
        // server: the cache node's connection limit counts on that.
        $this->m = new Memcached("site:$host:$port");
        // libmemcached always connects without blocking, so the connect
        // timeout applies; send and receive timeouts are in microseconds.
        // Set on every use: a health check's short timeouts must not stay
        // for the next page. After a failure the server is retried a second
        // later, on the same instance.
        $this->m->setOptions([
            Memcached::OPT_CONNECT_TIMEOUT => $ms,
            Memcached::OPT_POLL_TIMEOUT => $ms,
            Memcached::OPT_SEND_TIMEOUT => $ms * 1000,
            Memcached::OPT_RECV_TIMEOUT => $ms * 1000,
            Memcached::OPT_RETRY_TIMEOUT => 1,
        ]);
        if ($this->m->getServerList() !== []) {
            return;
        }
        if (!$this->m->addServer($host, $port)) {
            $message = $this->m->getResultMessage();
            // Not kept: the next request starts from an empty instance.
            $this->m->resetServerList();
            throw new CacheError("memcached $host:$port: " . $message);
        }
    }

    public function get(string $key): ?string
    {
        $value = $this->m->get($key);
        $code = $this->m->getResultCode();
        if ($code === Memcached::RES_NOTFOUND) {
            return null;
        }
        if ($code !== Memcached::RES_SUCCESS) {
            throw new CacheError("memcached get $key: " . $this->m->getResultMessage());
        }
        return is_string($value) ? $value : null;
    }

    public function set(string $key, string $value, int $ttl): void
    {
        if (!$this->m->set($key, $value, $ttl)) {
            throw new CacheError("memcached set $key: " . $this->m->getResultMessage());
        }
    }

    public function delete(string $key): void
    {
        if (!$this->m->delete($key) && $this->m->getResultCode() !== Memcached::RES_NOTFOUND) {
            throw new CacheError("memcached delete $key: " . $this->m->getResultMessage());
        }
    }
}

final class RedisCache implements Cache
{
    private Redis $r;

    public function __construct(string $host, int $port, float $timeout)
    {
        $this->r = new Redis();
        try {
            // A persistent connection, kept by the php-fpm worker from one
            // request to the next, as for memcached above; phpredis keeps
            // one per host, port, timeout and id. Host, port, connect
            // timeout, persistent id, retry interval, read timeout.
            if (!$this->r->pconnect($host, $port, $timeout, 'site', 0, $timeout)) {
                throw new CacheError("redis $host:$port: cannot connect");
            }
        } catch (RedisException $e) {
            throw new CacheError("redis $host:$port: " . $e->getMessage(), 0, $e);
        }
    }

    public function get(string $key): ?string
    {
        try {
            $value = $this->r->get($key);
        } catch (RedisException $e) {
            throw new CacheError("redis get $key: " . $e->getMessage(), 0, $e);
        }
        return is_string($value) ? $value : null;
    }

    public function set(string $key, string $value, int $ttl): void
    {
        try {
            $ok = $this->r->setex($key, $ttl, $value);
        } catch (RedisException $e) {
            throw new CacheError("redis set $key: " . $e->getMessage(), 0, $e);
        }
        if ($ok !== true) {
            throw new CacheError("redis set $key: refused");
        }
    }

    public function delete(string $key): void
    {
        try {
            $this->r->del($key);
        } catch (RedisException $e) {
            throw new CacheError("redis delete $key: " . $e->getMessage(), 0, $e);
        }
    }
}
