package sample

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead/bulkhead/internal/hosttest"
)

// objectCacheHarness loads the drop-in as WordPress does, with the few
// WordPress functions it calls, then runs the PHP in $argv[1].
const objectCacheHarness = `<?php
define('DB_NAME', 'wordpress');
define('DAY_IN_SECONDS', 86400);
$table_prefix = 'wp_';
function is_multisite() { return false; }
function wp_suspend_cache_addition() { return false; }
function check($what, $got, $want) {
    if ($got !== $want) {
        echo "FAIL $what: got ", var_export($got, true), ", want ", var_export($want, true), "\n";
    }
}
require $argv[1];
if (!function_exists('wp_cache_init')) {
    echo "FAIL the drop-in defined no wp_cache_init\n";
    exit;
}
wp_cache_init();
eval($argv[2]);
echo "done\n";
`

// TestWordPressObjectCache runs the object cache drop-in that init --app
// wordpress writes against a real memcached: what one request stores,
// the next reads (another PHP process), and it answers as WordPress's own
// cache does.
func TestWordPressObjectCache(t *testing.T) {
	php, err := exec.LookPath("php")
	hosttest.Require(t, err == nil, "php (apt-get install php-cli php-memcached): %v", err)
	out, err := exec.Command(php, "-r", "echo class_exists('Memcached') ? 'yes' : 'no';").Output()
	hosttest.Require(t, err == nil && string(out) == "yes", "PHP's memcached extension (apt-get install php-memcached): %v %s", err, out)
	mcd, err := exec.LookPath("memcached")
	if err != nil {
		mcd = "/usr/bin/memcached"
	}
	_, err = os.Stat(mcd)
	hosttest.Require(t, err == nil, "memcached (apt-get install memcached): %v", err)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	d := exec.Command(mcd, "-l", "127.0.0.1", "-p", fmt.Sprint(port), "-U", "0", "-m", "16", "-u", "nobody")
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Process.Kill(); d.Wait() })
	hosttest.Eventually(t, 5*time.Second, "memcached listens", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	dir := t.TempDir()
	dropin := filepath.Join(dir, "object-cache.php")
	src, err := files.ReadFile("files/wordpress/" + wordpressObjectCache)
	if err != nil {
		t.Fatal(err)
	}
	harness := filepath.Join(dir, "harness.php")
	for name, data := range map[string][]byte{dropin: src, harness: []byte(objectCacheHarness)} {
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(t *testing.T, env []string, code string) {
		t.Helper()
		c := exec.Command(php, harness, dropin, code)
		c.Env = append(os.Environ(), env...)
		out, err := c.CombinedOutput()
		if err != nil || strings.Contains(string(out), "FAIL") || !strings.HasSuffix(string(out), "done\n") {
			t.Errorf("%v\n%s", err, out)
		}
	}
	env := []string{"CACHE_DRIVER=memcached", "CACHE_HOST=127.0.0.1", fmt.Sprintf("CACHE_PORT=%d", port)}

	t.Run("one request", func(t *testing.T) {
		run(t, env, `
			check('set', wp_cache_set('k', ['a' => 1], 'g'), true);
			check('get', wp_cache_get('k', 'g', false, $found), ['a' => 1]);
			check('found', $found, true);
			check('miss', wp_cache_get('nosuch', 'g', false, $found), false);
			check('miss found', $found, false);
			wp_cache_set('f', false);
			check('false is a value', [wp_cache_get('f', '', false, $found), $found], [false, true]);
			check('add over a key', wp_cache_add('k', 2, 'g'), false);
			check('replace a missing key', wp_cache_replace('nosuch', 2, 'g'), false);
			check('replace', wp_cache_replace('k', 3, 'g'), true);
			check('replaced', wp_cache_get('k', 'g'), 3);
			check('incr', wp_cache_incr('k', 2, 'g'), 5);
			check('decr below 0', wp_cache_decr('k', 9, 'g'), 0);
			check('incr a missing key', wp_cache_incr('nosuch', 1, 'g'), false);
			wp_cache_set_multiple(['m1' => 'one', 'm2' => 'two'], 'g');
			check('get_multiple', wp_cache_get_multiple(['m2', 'nosuch', 'm1'], 'g'), ['m2' => 'two', 'nosuch' => false, 'm1' => 'one']);
			check('delete', wp_cache_delete('m1', 'g'), true);
			check('deleted', wp_cache_get('m1', 'g'), false);
			$o = new stdClass; $o->v = 1;
			wp_cache_set('o', $o);
			$o->v = 2;
			check('a copy is kept, not the object', wp_cache_get('o')->v, 1);
			wp_cache_add_non_persistent_groups(['counts']);
			wp_cache_set('c', 7, 'counts');
			check('non-persistent in this request', wp_cache_get('c', 'counts'), 7);
			wp_cache_set('long', 'x', 'g', 90 * DAY_IN_SECONDS);
			check('more than 30 days is a duration', wp_cache_get('long', 'g', true), 'x');
			wp_cache_set(str_repeat('k', 300), 'long key', 'g');
			check('a key longer than memcached allows', wp_cache_get(str_repeat('k', 300), 'g', true), 'long key');
			wp_cache_set('a key with spaces', 's', 'g');
			check('a key with spaces', wp_cache_get('a key with spaces', 'g', true), 's');
		`)
	})
	t.Run("the next request reads memcached", func(t *testing.T) {
		run(t, env, `
			check('persisted', wp_cache_get('k', 'g', false, $found), 0);
			check('persisted found', $found, true);
			check('persisted multiple', wp_cache_get_multiple(['m2'], 'g'), ['m2' => 'two']);
			check('non-persistent groups are not', wp_cache_get('c', 'counts'), false);
			check('flush', wp_cache_flush(), true);
			check('flushed', wp_cache_get('m2', 'g', false, $found), false);
		`)
	})
	t.Run("no memcached tier: WordPress keeps its own cache", func(t *testing.T) {
		c := exec.Command(php, harness, dropin, "")
		c.Env = append(os.Environ(), "CACHE_DRIVER=redis", "CACHE_HOST=127.0.0.1", "CACHE_PORT=6379")
		out, _ := c.CombinedOutput()
		if !strings.Contains(string(out), "FAIL the drop-in defined no wp_cache_init") {
			t.Errorf("with CACHE_DRIVER=redis the drop-in defined wp_cache_init:\n%s", out)
		}
	})
}
