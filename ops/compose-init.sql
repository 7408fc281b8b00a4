-- Prefect keeps its data in a database of its own, beside Freight's.
CREATE DATABASE prefect OWNER freight;
