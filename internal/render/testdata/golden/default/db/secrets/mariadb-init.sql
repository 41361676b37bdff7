-- The site's database and its users, for MariaDB on node db. Rendered by bulkhead.
-- mariadbd runs this file (init-file) at every start before it accepts
-- connections, so every statement is idempotent. It holds the site user's
-- password.
CREATE DATABASE IF NOT EXISTS `site` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

-- The site user, from each app node's address only, with rights on the
-- site's database only, and the current password:
--   app-1 from 10.77.0.7/32
--   app-2 from 10.77.0.8/32
-- One statement for all of them, not one each: every statement that changes
-- accounts writes the grant tables and reloads the privileges: at 110 app
-- nodes, 550 statements held up an up that added 10 nodes for 3.7 s while
-- the new nodes started (0.26 s on an idle host).
CREATE USER IF NOT EXISTS
  'site'@'10.77.0.7' IDENTIFIED BY 'golden-db-password',
  'site'@'10.77.0.8' IDENTIFIED BY 'golden-db-password';
ALTER USER
  'site'@'10.77.0.7' IDENTIFIED BY 'golden-db-password',
  'site'@'10.77.0.8' IDENTIFIED BY 'golden-db-password';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, REFERENCES, CREATE TEMPORARY TABLES, LOCK TABLES, CREATE VIEW, SHOW VIEW, TRIGGER, EXECUTE ON `site`.* TO
  'site'@'10.77.0.7',
  'site'@'10.77.0.8';
REVOKE ALL PRIVILEGES ON *.* FROM
  'site'@'10.77.0.7',
  'site'@'10.77.0.8';
REVOKE GRANT OPTION, CREATE ROUTINE, ALTER ROUTINE, EVENT, DELETE HISTORY ON `site`.* FROM
  'site'@'10.77.0.7',
  'site'@'10.77.0.8';

-- Root logs in only as the system's root, over the local socket.
ALTER USER IF EXISTS 'root'@'localhost' IDENTIFIED VIA unix_socket;

-- No monitor, no exporter account.
DROP USER IF EXISTS 'prometheus'@'localhost';

-- Drop accounts the plan does not name: the site user at addresses that
-- left the app pool, anonymous users, and root anywhere but localhost.
SET SESSION group_concat_max_len = 1048576;
SET @bulkhead_stale = (SELECT GROUP_CONCAT(QUOTE(User), '@', QUOTE(Host) SEPARATOR ', ') FROM mysql.user WHERE is_role = 'N' AND ((User = 'site' AND Host NOT IN ('10.77.0.7', '10.77.0.8')) OR User = '' OR (User = 'root' AND Host <> 'localhost')));
SET @bulkhead_drop = IF(@bulkhead_stale IS NULL, 'DO 0', CONCAT('DROP USER ', @bulkhead_stale));
PREPARE bulkhead_drop FROM @bulkhead_drop;
EXECUTE bulkhead_drop;
DEALLOCATE PREPARE bulkhead_drop;
