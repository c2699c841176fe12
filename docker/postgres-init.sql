-- Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d/), as
-- POSTGRES_USER (rankline), which owns both databases.
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
