<?php
/*
 * A persistent object cache for WordPress in the stack's memcached, written
 * by "bulkhead init --app wordpress". Without it, WordPress builds its
 * options, posts, terms and queries from the database on every request;
 * with it, every app node shares what one has built, and the front page
 * reads memcached instead of running a dozen queries.
 *
 * WordPress loads wp-content/object-cache.php itself and uses it when it
 * defines wp_cache_init(). This one does only when php-fpm says the stack
 * has a memcached (CACHE_DRIVER, CACHE_HOST, CACHE_PORT) and PHP has the
 * memcached extension; otherwise WordPress keeps its own per-request cache.
 *
 * Debian packages no object cache drop-in for WordPress (as of 2026-11), so
 * bulkhead writes this small one. Delete it to go without.
 */

if (getenv('CACHE_DRIVER') === 'memcached' && getenv('CACHE_HOST') && class_exists('Memcached')) :

/**
 * WP_Object_Cache keeps what WordPress caches in memcached, and, for the
 * length of one request, in PHP's memory too (WordPress reads the same
 * option or post many times a request). Groups WordPress calls
 * non-persistent stay in PHP's memory only.
 */
class WP_Object_Cache
{
    /** @var Memcached */
    private $mc;
    /** @var array<string, array<string, mixed>> what this request has read or written, by group and key */
    private $local = [];
    /** @var array<string, true> */
    private $global = [];
    /** @var array<string, true> */
    private $local_only = [];
    /** @var string */
    private $prefix;
    /** @var string */
    private $blog = '';

    /** @var int the hits and misses of this request, as WordPress's own cache counts them */
    public $cache_hits = 0;
    public $cache_misses = 0;

    public function __construct()
    {
        // A persistent connection: php-fpm's worker keeps it from one
        // request to the next, and a request pays for no TCP handshake.
        $this->mc = new Memcached('bulkhead-wp');
        if ($this->mc->getServerList() === []) {
            $this->mc->setOption(Memcached::OPT_TCP_NODELAY, true);
            $this->mc->setOption(Memcached::OPT_CONNECT_TIMEOUT, 500); // ms
            $this->mc->addServer((string) getenv('CACHE_HOST'), (int) getenv('CACHE_PORT'));
        }
        global $table_prefix;
        // One memcached may serve more than one WordPress (or database).
        $this->prefix = 'wp:' . DB_NAME . ':' . $table_prefix . ':';
        if (function_exists('is_multisite') && is_multisite()) {
            $this->blog = get_current_blog_id() . ':';
        }
    }

    private function id($key, $group)
    {
        $id = $this->prefix . (isset($this->global[$group]) ? '' : $this->blog) . $group . ':' . $key;
        // memcached's keys are at most 250 bytes, without spaces or control characters.
        return strlen($id) > 250 || preg_match('/[\s\x00-\x1f\x7f]/', $id) ? $this->prefix . 'md5:' . md5($id) : $id;
    }

    private function persistent($group)
    {
        return !isset($this->local_only[$group]);
    }

    private static function copy($data)
    {
        return is_object($data) ? clone $data : $data;
    }

    private function remember($key, $group, $data)
    {
        $this->local[$group][$key] = self::copy($data);
    }

    public function get($key, $group = 'default', $force = false, &$found = null)
    {
        $group = $group === '' ? 'default' : $group;
        if (!$force && isset($this->local[$group]) && array_key_exists($key, $this->local[$group])) {
            $found = true;
            $this->cache_hits++;
            return self::copy($this->local[$group][$key]);
        }
        $found = false;
        if ($this->persistent($group)) {
            $data = $this->mc->get($this->id($key, $group));
            $found = $this->mc->getResultCode() === Memcached::RES_SUCCESS;
        }
        if (!$found) {
            $this->cache_misses++;
            return false;
        }
        $this->cache_hits++;
        $this->remember($key, $group, $data);
        return $data;
    }

    public function get_multiple($keys, $group = 'default', $force = false)
    {
        $group = $group === '' ? 'default' : $group;
        $out = [];
        $fetch = [];
        foreach ($keys as $key) {
            if (!$force && isset($this->local[$group]) && array_key_exists($key, $this->local[$group])) {
                $out[$key] = self::copy($this->local[$group][$key]);
                $this->cache_hits++;
            } elseif ($this->persistent($group)) {
                $fetch[$this->id($key, $group)] = $key;
            } else {
                $out[$key] = false;
                $this->cache_misses++;
            }
        }
        if ($fetch !== []) {
            $got = $this->mc->getMulti(array_keys($fetch)) ?: [];
            foreach ($fetch as $id => $key) {
                if (array_key_exists($id, $got)) {
                    $out[$key] = $got[$id];
                    $this->remember($key, $group, $got[$id]);
                    $this->cache_hits++;
                } else {
                    $out[$key] = false;
                    $this->cache_misses++;
                }
            }
        }
        // In the order asked for, as WordPress's own cache answers.
        $ordered = [];
        foreach ($keys as $key) {
            $ordered[$key] = $out[$key];
        }
        return $ordered;
    }

    /** write is set, add and replace: memcached's answer decides, then PHP's memory follows it. */
    private function write($op, $key, $data, $group, $expire)
    {
        $group = $group === '' ? 'default' : $group;
        if (wp_suspend_cache_addition() && $op === 'add') {
            return false;
        }
        if (!$this->persistent($group)) {
            $has = isset($this->local[$group]) && array_key_exists($key, $this->local[$group]);
            if (($op === 'add' && $has) || ($op === 'replace' && !$has)) {
                return false;
            }
            $this->remember($key, $group, $data);
            return true;
        }
        // memcached reads more than 30 days as a time, not a duration.
        $expire = max(0, (int) $expire);
        if ($expire > 30 * DAY_IN_SECONDS) {
            $expire += time();
        }
        $ok = $this->mc->$op($this->id($key, $group), $data, $expire);
        if ($ok) {
            $this->remember($key, $group, $data);
        } elseif ($op === 'set') {
            // Never keep, for the rest of the request, what memcached lost.
            unset($this->local[$group][$key]);
        }
        return $ok;
    }

    public function set($key, $data, $group = 'default', $expire = 0)
    {
        return $this->write('set', $key, $data, $group, $expire);
    }

    public function add($key, $data, $group = 'default', $expire = 0)
    {
        return $this->write('add', $key, $data, $group, $expire);
    }

    public function replace($key, $data, $group = 'default', $expire = 0)
    {
        return $this->write('replace', $key, $data, $group, $expire);
    }

    public function delete($key, $group = 'default')
    {
        $group = $group === '' ? 'default' : $group;
        $had = isset($this->local[$group]) && array_key_exists($key, $this->local[$group]);
        unset($this->local[$group][$key]);
        if (!$this->persistent($group)) {
            return $had;
        }
        return $this->mc->delete($this->id($key, $group));
    }

    public function incr($key, $offset = 1, $group = 'default')
    {
        $value = $this->get($key, $group, true, $found);
        if (!$found) {
            return false;
        }
        $value = max(0, (is_numeric($value) ? (int) $value : 0) + (int) $offset);
        $this->set($key, $value, $group);
        return $value;
    }

    public function flush()
    {
        $this->local = [];
        return $this->mc->flush();
    }

    public function flush_runtime()
    {
        $this->local = [];
        return true;
    }

    public function add_global_groups($groups)
    {
        foreach ((array) $groups as $g) {
            $this->global[$g] = true;
        }
    }

    public function add_non_persistent_groups($groups)
    {
        foreach ((array) $groups as $g) {
            $this->local_only[$g] = true;
        }
    }

    public function switch_to_blog($blog_id)
    {
        $this->blog = is_multisite() ? (int) $blog_id . ':' : '';
    }
}

function wp_cache_init()
{
    $GLOBALS['wp_object_cache'] = new WP_Object_Cache();
}

function wp_cache_get($key, $group = '', $force = false, &$found = null)
{
    global $wp_object_cache;
    return $wp_object_cache->get($key, $group, $force, $found);
}

function wp_cache_get_multiple($keys, $group = '', $force = false)
{
    global $wp_object_cache;
    return $wp_object_cache->get_multiple($keys, $group, $force);
}

function wp_cache_set($key, $data, $group = '', $expire = 0)
{
    global $wp_object_cache;
    return $wp_object_cache->set($key, $data, $group, $expire);
}

function wp_cache_add($key, $data, $group = '', $expire = 0)
{
    global $wp_object_cache;
    return $wp_object_cache->add($key, $data, $group, $expire);
}

function wp_cache_replace($key, $data, $group = '', $expire = 0)
{
    global $wp_object_cache;
    return $wp_object_cache->replace($key, $data, $group, $expire);
}

function wp_cache_set_multiple(array $data, $group = '', $expire = 0)
{
    $out = [];
    foreach ($data as $key => $value) {
        $out[$key] = wp_cache_set($key, $value, $group, $expire);
    }
    return $out;
}

function wp_cache_add_multiple(array $data, $group = '', $expire = 0)
{
    $out = [];
    foreach ($data as $key => $value) {
        $out[$key] = wp_cache_add($key, $value, $group, $expire);
    }
    return $out;
}

function wp_cache_delete($key, $group = '')
{
    global $wp_object_cache;
    return $wp_object_cache->delete($key, $group);
}

function wp_cache_delete_multiple(array $keys, $group = '')
{
    $out = [];
    foreach ($keys as $key) {
        $out[$key] = wp_cache_delete($key, $group);
    }
    return $out;
}

function wp_cache_incr($key, $offset = 1, $group = '')
{
    global $wp_object_cache;
    return $wp_object_cache->incr($key, $offset, $group);
}

function wp_cache_decr($key, $offset = 1, $group = '')
{
    global $wp_object_cache;
    return $wp_object_cache->incr($key, -$offset, $group);
}

function wp_cache_flush()
{
    global $wp_object_cache;
    return $wp_object_cache->flush();
}

function wp_cache_flush_runtime()
{
    global $wp_object_cache;
    return $wp_object_cache->flush_runtime();
}

function wp_cache_supports($feature)
{
    return in_array($feature, ['add_multiple', 'set_multiple', 'get_multiple', 'delete_multiple', 'flush_runtime'], true);
}

function wp_cache_close()
{
    return true;
}

function wp_cache_add_global_groups($groups)
{
    global $wp_object_cache;
    $wp_object_cache->add_global_groups($groups);
}

function wp_cache_add_non_persistent_groups($groups)
{
    global $wp_object_cache;
    $wp_object_cache->add_non_persistent_groups($groups);
}

function wp_cache_switch_to_blog($blog_id)
{
    global $wp_object_cache;
    $wp_object_cache->switch_to_blog($blog_id);
}

function wp_cache_reset()
{
    _deprecated_function(__FUNCTION__, '3.5.0', 'wp_cache_switch_to_blog()');
    return false;
}

endif;
