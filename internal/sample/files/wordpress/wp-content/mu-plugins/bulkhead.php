<?php
/*
 * Plugin Name: bulkhead
 * Description: What WordPress cannot detect about a bulkhead stack. Written by "bulkhead init --app wordpress".
 */

/*
 * Every path that is not a file reaches index.php (Apache's FallbackResource,
 * nginx's try_files), so pretty permalinks work; WordPress cannot see that
 * when Apache runs PHP through php-fpm.
 */
add_filter('got_url_rewrite', '__return_true');

/*
 * The installer tries pretty permalinks by requesting its own URL, which a
 * node cannot reach (it has no route out, not even to the edge). Once it is
 * done, use them anyway.
 */
add_action('wp_install', function () {
    global $wp_rewrite;
    if (get_option('permalink_structure') === '') {
        $wp_rewrite->set_permalink_structure('/%postname%/');
        flush_rewrite_rules(false);
    }
});
