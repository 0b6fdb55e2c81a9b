CREATE DATABASE mysanta_main;
CREATE DATABASE mysanta_recommendations;
